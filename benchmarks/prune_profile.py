"""Where the pruning time goes: torch.profiler over a few blocks of the LLaMA-2-7B shape (CUDA).

    python benchmarks/prune_profile.py                       # wanda and sparsegpt, 4 blocks, 128 x 2048 tokens
    python benchmarks/prune_profile.py --layers 2 --methods sparsegpt --rows 30

Same model, tokens and code path as `prune_bench.py` (one warm-up block-set first, so that cuBLAS/cuSOLVER
handles and the caching allocator are set up), then one profiled pruning pass; prints the top operators by
device time and the wall time per block.
"""
from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from prune_bench import run_config, truncated
from shapes import build_model


def main() -> None:
    from repro.models.adapter import adapter_for
    from repro.prune.pipeline import prune_model

    args, ids = truncated(__doc__.splitlines()[0], 4, ["wanda", "sparsegpt"])
    for spec in args.methods:
        method, _, pattern = spec.partition(":")
        run = run_config(method, pattern or "unstructured", args.batch_size)
        model = build_model(args.shape, torch.float16, "cuda", 0, layers=args.layers)
        prune_model(model, adapter_for(model), run, ids)                      # warm-up
        model = build_model(args.shape, torch.float16, "cuda", 0, layers=args.layers)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            prune_model(model, adapter_for(model), run, ids)
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        print(f"== {spec}: {wall:.2f} s for {args.layers} blocks under the profiler "
              f"({wall / args.layers:.3f} s/block)", flush=True)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows), flush=True)
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
