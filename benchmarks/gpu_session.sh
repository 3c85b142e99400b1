#!/usr/bin/env bash
# One GPU session's benchmarks (issues #3 and #4), as run on the device machine; output lines go to $OUT.
#   bash benchmarks/gpu_session.sh [prune] [kernel] [profile] [speed] [prefill] [ppl] [lua] [offload70]
#   default: prune kernel profile speed. Issue #19's GPU targets, cheapest first (one call is <= 600 s; a session
#   has 15 device-minutes in all, start-up included): ppl (~2 min), prune, lua (~2 min), speed, offload70, profile.
#   env: OUT (default ./gpu-bench-out), PRUNE_METHODS, SPEED_ARGS
# Needs torch with CUDA, transformers, hydra-core, omegaconf (the device image lacks the last two: carry wheels).
set -uo pipefail
OUT=${OUT:-gpu-bench-out}; mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
steps=${*:-prune kernel profile speed}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"
for step in $steps; do case $step in
  # pruning speed, LLaMA-2-7B shape, 128 x 2048 tokens, fp16 (issue #3 targets: Wanda <= 12 s, SparseGPT <= 60 s)
  prune) timeout 330 python3 benchmarks/prune_bench.py --methods ${PRUNE_METHODS:-wanda wanda:2:4 sparsegpt} 2>"$OUT/prune.err" | tee -a "$OUT/prune.jsonl" ;;
  # SparseGPT's OBS step alone on the GPU: ours vs the per-column loop
  kernel) timeout 60 python3 benchmarks/prune_bench.py --kernel 4096x4096 2>>"$OUT/prune.err" | tee -a "$OUT/prune.jsonl" ;;
  # where the time goes: 4 blocks under torch.profiler
  profile) timeout 200 python3 benchmarks/prune_profile.py 2>"$OUT/profile.err" | tee "$OUT/profile.txt" ;;
  # inference speed, dense vs 2:4 (semi-structured kernels), Lua-LLM protocol (issue #4)
  # (the full 256-token protocol costs ~84 s per 2:4 run on torch 2.11: SPEED_ARGS shortens it)
  speed) timeout 200 python3 benchmarks/speed_bench.py ${SPEED_ARGS:-} 2>"$OUT/speed.err" | tee -a "$OUT/speed.jsonl" ;;
  # prefill-bound: 8 x 2048 prompt tokens, 2 new tokens
  prefill) timeout 200 python3 benchmarks/speed_bench.py --input-tokens 2048 --output-tokens 2 2>>"$OUT/speed.err" | tee -a "$OUT/speed.jsonl" ;;
  # WikiText-2 perplexity loop, 7B shape, 83 windows x 4096, batch 1 2 4 (issue #19: reference 15.6 s, target <= 8 s)
  ppl) (cd benchmarks && timeout 200 python3 ppl_bench.py) 2>"$OUT/ppl.err" | tee -a "$OUT/ppl.jsonl" ;;
  # Lua-LLM threshold-training step, 7B shape, 1 x 2048, bf16 (paper: ~7 s per step on 2 A100-80GB)
  lua) (cd benchmarks && timeout 200 python3 lua_llm_iter.py --iters 4) 2>"$OUT/lua.err" | tee -a "$OUT/lua.jsonl" ;;
  # 70B-class pruning with CPU offload: 4 of LLaMA-2-70B's 80 blocks, per-block time x 80 (issue #19 §5)
  offload70) (cd benchmarks && timeout 300 python3 offload_check.py --shape 70b --layers 4 --methods wanda) 2>"$OUT/offload.err" | tee -a "$OUT/offload.jsonl" ;;
esac; done
for f in "$OUT"/*.err; do echo "== $f"; tail -n 5 "$f"; done
