#!/usr/bin/env bash
# Regenerate tests/golden/ from the ORIGINAL reference implementations (run outside CI; minutes on CPU).
#
#   tools/golden/make_fixtures.sh                 # everything
#   MIRRORS=/work/.mirror tools/golden/make_fixtures.sh   # export the references from local git mirrors
#   GOLDEN_CASES="wanda_50 owl_wanda_70" GOLDEN_WORK=<previous workdir> ...  # rerun some cases, repack all
#
# 1. a pinned reference environment ($GOLDEN_VENV, default /tmp/repro-golden-venv) from requirements-ref.txt;
# 2. the reference repositories at the commits in refs.txt, exported with `git archive` to $GOLDEN_SRC
#    (from $MIRRORS/<owner>+<name>/repo when given, else cloned from GitHub) — never into this repository;
# 3. export_inputs.py (project env): the dense golden models as HF directories + calibration/eval tokens;
# 4. ref_driver.py (reference env): each case of cases.json, reference code unmodified (see its docstring),
#    once on 1 thread (the fixture) and once on 2 threads (the reference's own float noise, stored with it);
# 5. pack.py: tests/golden/<model>.json (+ .npz: tokens and bit-packed masks).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PROJECT_PYTHON:-python}"
VENV="${GOLDEN_VENV:-/tmp/repro-golden-venv}"
SRC="${GOLDEN_SRC:-/tmp/repro-golden-src}"
WORK="${GOLDEN_WORK:-$(mktemp -d /tmp/repro-golden-work.XXXX)}"
mkdir -p "$WORK"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$ROOT/tools/golden/requirements-ref.txt"
fi
"$VENV/bin/python" -c "import json, torch, transformers, numpy; print(json.dumps({'torch': torch.__version__, \
'transformers': transformers.__version__, 'numpy': numpy.__version__}))" > "$WORK/ref_versions.json"

mkdir -p "$SRC"
grep -v '^#' "$ROOT/tools/golden/refs.txt" | while read -r repo commit paths; do
  [ -z "$repo" ] && continue
  dest="$SRC/${repo/\//+}"
  [ -d "$dest/lib" ] || [ -f "$dest/sparsegpt.py" ] || [ -f "$dest/lofit_trainer.py" ] && continue
  mkdir -p "$dest"
  # shellcheck disable=SC2086  # $paths: optional list of paths to export (NeuroAL: its tree has an LFS-sized file)
  if [ -n "${MIRRORS:-}" ]; then
    git --git-dir="$MIRRORS/${repo/\//+}/repo" archive "$commit" $paths | tar -x -C "$dest"
  else
    tmp="$(mktemp -d)"; git clone -q "https://github.com/$repo" "$tmp"
    git -C "$tmp" archive "$commit" $paths | tar -x -C "$dest"; rm -rf "$tmp"
  fi
done

(cd "$ROOT" && "$PY" tools/golden/export_inputs.py "$WORK")
mkdir -p "$WORK/out"
"$PY" - "$ROOT/tools/golden/cases.json" <<'PYEOF' > "$WORK/plan.txt"
import json, sys
import os
only = os.environ.get("GOLDEN_CASES", "").split()
for c in json.load(open(sys.argv[1]))["cases"]:
    if only and c["id"] not in only:
        continue
    for m in c["models"]:
        print(c["repo"].replace("/", "+"), m, c["id"])
PYEOF
while read -r repo model case; do
  "$VENV/bin/python" "$ROOT/tools/golden/ref_driver.py" --src "$SRC/$repo" --model-dir "$WORK/$model" \
    --case "$case" --cases "$ROOT/tools/golden/cases.json" --out "$WORK/out/$model.$case.json" 2>"$WORK/out/$model.$case.log" \
    || echo "FAILED: $model $case (log: $WORK/out/$model.$case.log)" >&2
  # the reference's own float noise: the same run on 2 threads (matmul reduction order changes)
  OMP_NUM_THREADS=2 "$VENV/bin/python" "$ROOT/tools/golden/ref_driver.py" --src "$SRC/$repo" --threads 2 \
    --model-dir "$WORK/$model" --case "$case" --cases "$ROOT/tools/golden/cases.json" \
    --out "$WORK/out/$model.$case.t2.json" 2>>"$WORK/out/$model.$case.log" || true
done < "$WORK/plan.txt"
(cd "$ROOT" && "$PY" tools/golden/pack.py "$WORK" tools/golden/refs.txt "$WORK/ref_versions.json" \
  "tools/golden/make_fixtures.sh (commit $(git -C "$ROOT" rev-parse --short HEAD))")
# LoFiT (tests/golden/lofit_reference.pt): its own script, reference code run unmodified (see its docstring)
"$VENV/bin/python" "$ROOT/tools/golden/lofit_fixture.py" --src "$SRC/fc2869+lo-fit" > "$WORK/out/lofit.log" 2>&1 \
  || echo "FAILED: lofit (log: $WORK/out/lofit.log)" >&2
du -ch "$ROOT"/tests/golden/* | tail -1
