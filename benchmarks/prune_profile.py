"""Where the pruning time goes: torch.profiler over a few blocks of the LLaMA-2-7B shape (CUDA).

    python benchmarks/prune_profile.py                       # wanda and sparsegpt, 4 blocks, 128 x 2048 tokens
    python benchmarks/prune_profile.py --layers 2 --methods sparsegpt --rows 30

Same model, tokens and code path as `prune_bench.py` (one warm-up block-set first, so that cuBLAS/cuSOLVER
handles and the caching allocator are set up), then one profiled pruning pass; prints the top operators by
device time and the wall time per block.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from prune_bench import SHAPES, build_model, run_config


def main(argv=None) -> None:
    from repro.models.adapter import adapter_for
    from repro.prune.pipeline import prune_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args(argv)
    SHAPES["7b"]["num_hidden_layers"] = args.layers
    ids = torch.randint(0, SHAPES["7b"]["vocab_size"], (args.nsamples, args.seqlen),
                        generator=torch.Generator().manual_seed(0))
    for spec in args.methods:
        method, _, pattern = spec.partition(":")
        run = run_config(method, pattern or "unstructured", args.batch_size)
        model = build_model("7b", torch.float16, "cuda", 0)
        prune_model(model, adapter_for(model), run, ids)                      # warm-up
        model = build_model("7b", torch.float16, "cuda", 0)
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
