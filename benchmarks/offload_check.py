"""CPU offload on a GPU: same pruned weights as the all-on-GPU path, and how much GPU memory it needs.

    python benchmarks/offload_check.py                 # LLaMA-2-7B layer shape, 8 blocks, 128 x 2048 tokens, fp16
    python benchmarks/offload_check.py --layers 4 --methods wanda sparsegpt
    python benchmarks/offload_check.py --shape 70b --layers 4      # LLaMA-2-70B blocks (4 of 80): scale per block

One random-weight model (`shapes.build_model`, on CPU, seed 0) is pruned twice per method: a copy moved
to the GPU (`engine.offload=false`) and the CPU copy with `engine.offload=true engine.device=cuda` (blocks and
activations on CPU, one block at a time on the GPU). Prints one JSON line per method: wall time and peak GPU
memory of each path, and whether every decoder linear came out bit-identical.
"""
from __future__ import annotations

import copy
import json
import time

import torch

from prune_bench import run_config, truncated
from shapes import build_model


def prune_timed(model, run, ids) -> tuple[float, float]:
    from repro.models.adapter import adapter_for
    from repro.prune.pipeline import prune_model

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    prune_model(model, adapter_for(model), run, ids)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - base) / 2 ** 30


def main() -> None:
    from repro.config import EngineConfig
    from repro.models.adapter import adapter_for

    args, ids = truncated(__doc__.splitlines()[0], 8, ["wanda", "sparsegpt"])
    for method in args.methods:
        run = run_config(method, "unstructured", args.batch_size)
        cpu_model = build_model(args.shape, torch.float16, "cpu", 0, layers=args.layers)
        gpu_model = copy.deepcopy(cpu_model).to("cuda")
        gpu_s, gpu_peak = prune_timed(gpu_model, run, ids)
        weights_gib = sum(t.numel() * t.element_size() for t in gpu_model.parameters()) / 2 ** 30
        run.engine = EngineConfig(offload=True, device="cuda")
        off_s, off_peak = prune_timed(cpu_model, run, ids)
        a, b = adapter_for(gpu_model).all_linears(gpu_model), adapter_for(cpu_model).all_linears(cpu_model)
        differing = [n for n in a if not torch.equal(a[n].weight.cpu(), b[n].weight)]
        print(json.dumps({"method": method, "layers": args.layers, "nsamples": args.nsamples, "seqlen": args.seqlen,
                          "on_gpu_wall_s": round(gpu_s, 2), "on_gpu_peak_gib_above_weights": round(gpu_peak, 2),
                          "weights_gib": round(weights_gib, 2), "offload_wall_s": round(off_s, 2),
                          "offload_peak_gpu_gib": round(off_peak, 2), "linears": len(a),
                          "linears_differing": differing[:5], "identical": not differing,
                          "gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
        del gpu_model, cpu_model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
