"""Perplexity-evaluation speed: the project's WikiText-2 loop (`repro.eval.perplexity.perplexity`, the code path
of every `eval.ppl` run) on the LLaMA-2-7B shape at seqlen 4096 (issue #19 §2: the reference takes 15.6 s on one
H100, the target is ≤ 8 s).

    python benchmarks/ppl_bench.py                           # 7B shape, fp16, CUDA, 83 windows x 4096, batch 1 2 4
    python benchmarks/ppl_bench.py --shape small --windows 4 --seqlen 256 --batch-sizes 1 2   # CPU smoke run

Random weights and tokens stand in for the checkpoint and the text: the work is the window count, whatever the
values — LLaMA-2's tokenizer gives WikiText-2's test split 83 windows of 4096 (research note
baselines_neuronal.md, wanda#52). One warm-up batch first; then per batch size one timed call (CUDA synchronised)
with its peak GPU memory (CPU: peak RSS of the process) and the perplexity, which must agree across batch sizes
up to fp16 noise (printed so that a batching change cannot move the number unseen). One JSON line per batch size.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from prune_bench import peak_memory_gib
from shapes import SHAPES, build_model

DEFAULTS = {"7b": dict(dtype="float16", device="cuda"), "small": dict(dtype="float32", device="cpu")}


def main(argv=None) -> None:
    from repro.eval.perplexity import perplexity

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(DEFAULTS), default="7b")
    p.add_argument("--windows", type=int, default=83)
    p.add_argument("--seqlen", type=int, default=4096)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype, device = getattr(torch, DEFAULTS[args.shape]["dtype"]), DEFAULTS[args.shape]["device"]
    model = build_model(args.shape, dtype, device, seed=0)
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, args.seqlen)
    ids = torch.randint(0, SHAPES[args.shape]["vocab_size"], (1, args.windows * args.seqlen),
                        generator=torch.Generator().manual_seed(0))
    perplexity(model, ids, args.seqlen, batch_size=1, max_windows=1, desc="warm-up")
    for batch_size in args.batch_sizes:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        ppl, n = perplexity(model, ids, args.seqlen, batch_size=batch_size, desc=f"ppl b{batch_size}")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        print(json.dumps({"bench": "ppl", "shape": args.shape, "dtype": str(dtype).replace("torch.", ""),
                          "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                          "windows": n, "seqlen": args.seqlen, "batch_size": batch_size,
                          "wall_s": round(time.perf_counter() - t0, 3), "peak_gib": round(peak_memory_gib(device), 2),
                          "ppl": ppl, "torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
