"""Pruning speed benchmark: a random-weight LLaMA-shaped model, random calibration tokens, one JSON line per method.

    python benchmarks/prune_bench.py                         # LLaMA-2-7B shape, 128 × 2048 tokens, fp16, CUDA
    python benchmarks/prune_bench.py --shape small           # reduced shape on CPU (fp32, 16 × 256 tokens)
    python benchmarks/prune_bench.py --methods wanda:2:4 sparsegpt --batch-size 16
    python benchmarks/prune_bench.py --config env=offline model=smollm2-135m calib.nsamples=32 --threads 1
                                                             # a real model + real calibration text via Hydra
    python benchmarks/prune_bench.py --kernel 1536x512       # SparseGPT's OBS step alone: ours vs a column loop

The shape decides the cost, not the values, so random weights (normal, std 0.02) and random token ids stand in
for the checkpoint and C4. Each method prunes a freshly initialised model (same seed) through the real path,
`repro.prune.pipeline.prune_model` (engine + uniform allocation + scorer), 50% sparsity. Printed per method:
wall seconds of the pruning pass (calibration capture included, model creation excluded), peak memory (CUDA:
`max_memory_allocated`, model weights included, as the reference's figures; CPU: the process's peak RSS so far),
measured sparsity of the decoder linears; also the process CPU seconds (on a shared CPU, wall time depends on
the load; CPU seconds much less).

Reference figures (issue #3, one H100 80GB, reference code, transformers 4.44): Wanda 50% 25.0 s / 18.6 GiB,
Wanda 2:4 40.1 s, SparseGPT 50% 369 s / 18.1 GiB. Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

from shapes import SHAPES, build_model

DEFAULTS = {"7b": dict(nsamples=128, seqlen=2048, dtype="float16", device="cuda"),
            "small": dict(nsamples=16, seqlen=256, dtype="float32", device="cpu")}


def run_config(method: str, pattern: str, batch_size: int):
    from repro.config import load_run_config

    nm = pattern != "unstructured"
    n, m = map(int, pattern.split(":")) if nm else (0, 0)
    return load_run_config({
        "score": {"name": method}, "sparsity": 0.5,
        "pattern": {"name": "nm", "n": n, "m": m} if nm else {"name": "unstructured"},
        "calib": {"name": "c4", "batch_size": batch_size}, "model": {"name": "bench", "path": "random"},
    })


def truncated(description: str, layers: int, methods: list) -> tuple:
    """Shared by prune_profile.py and offload_check.py: parse their arguments (a `--shape` cut to its first
    `--layers` blocks, for `build_model(args.shape, ..., layers=args.layers)`) and draw the calibration tokens.
    Returns `(args, ids)`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--shape", choices=("7b", "70b"), default="7b")
    p.add_argument("--layers", type=int, default=layers)
    p.add_argument("--methods", nargs="+", default=methods)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rows", type=int, default=25, help="profiler table rows (prune_profile.py)")
    args = p.parse_args()
    ids = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.nsamples, args.seqlen),
                        generator=torch.Generator().manual_seed(0))
    return args, ids


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2 ** 30
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if platform.system() == "Linux" else 1 / 1024) / 2 ** 20


def from_hydra(overrides: list, method: str, pattern: str):
    """A real model and its real calibration set, composed from the Hydra tree like `python -m repro.run`."""
    from hydra import compose, initialize_config_dir

    from repro.config import load_run_config
    from repro.data.calibration import load_calibration
    from repro.models.loading import load_model, model_seqlen
    from repro.run import CONF_DIR

    nm = [] if pattern == "unstructured" else [f"pattern=nm_{pattern.replace(':', '_')}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        run = load_run_config(compose("config", overrides=[*overrides, f"score={method}", *nm]))
    model, tokenizer = load_model(run.model, seed=run.seed)
    calib = load_calibration(run.calib, tokenizer, run.calib.seqlen or model_seqlen(model, run.model))
    return model, calib.input_ids, run


def bench_one(spec: str, args) -> dict:
    from repro.models.adapter import adapter_for
    from repro.prune.pipeline import measure_sparsity, prune_model

    method, _, pattern = spec.partition(":")
    pattern = pattern or "unstructured"
    if args.config:
        model, ids, run = from_hydra(args.config, method, pattern)
        args.device, args.dtype, args.shape = str(model.device), run.model.dtype, run.model.name
        args.nsamples, args.seqlen, args.batch_size = ids.shape[0], ids.shape[1], run.calib.batch_size
    else:
        model = build_model(args.shape, getattr(torch, args.dtype), args.device, args.seed)
        ids = torch.randint(0, SHAPES[args.shape]["vocab_size"], (args.nsamples, args.seqlen),
                            generator=torch.Generator().manual_seed(args.seed))
        run = run_config(method, pattern, args.batch_size)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    prune_model(model, adapter_for(model), run, ids)
    if cuda:
        torch.cuda.synchronize()
    wall, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    result = {"method": method, "pattern": pattern, "shape": args.shape, "device": args.device,
              "dtype": args.dtype, "nsamples": args.nsamples, "seqlen": args.seqlen, "batch_size": args.batch_size,
              "wall_s": round(wall, 2), "process_cpu_s": round(cpu_s, 2), "peak_mem_gib": round(peak_memory_gib(args.device), 2),
              "sparsity": round(measure_sparsity(model, adapter_for(model))["overall"], 5),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    if cuda:
        result["gpu"] = torch.cuda.get_device_name()
    del model
    if cuda:
        torch.cuda.empty_cache()
    return result


def column_loop_obs(W, hinv, sparsity, blocksize=128):
    """Baseline for --kernel: the published per-column loop (one rank-1 update per column), unstructured."""
    W = W.clone()
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        W1, Hinv1 = W[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        score = W1 ** 2 / torch.diag(Hinv1).reshape(1, -1) ** 2
        mask1 = score <= torch.sort(score.flatten())[0][int(score.numel() * sparsity)]
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i], Err1[:, i] = q, (w - q) / d
            W1[:, i:] -= Err1[:, i:i + 1] @ Hinv1[i:i + 1, i:]
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ hinv[i1:i2, i2:]
    return W


def bench_kernel(shape: str, device: str, seed: int) -> dict:
    from repro.methods.sparsegpt import inverse_hessian_factor, sparsegpt_prune

    rows, cols = map(int, shape.split("x"))
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * cols, cols, generator=g)
    hinv, dead = inverse_hessian_factor((2 / 16 * X.t() @ X).to(device), 0.01)
    W = torch.randn(rows, cols, generator=g).to(device)
    out = {"kernel": "sparsegpt_obs", "rows": rows, "cols": cols, "device": device, "threads": torch.get_num_threads()}
    results = {}
    for name, fn in (("ours", lambda: sparsegpt_prune(W, hinv, dead, [slice(0, rows)], [0.5])),
                     ("column_loop", lambda: column_loop_obs(W, hinv, 0.5))):
        fn()                                            # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        results[name] = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out[f"{name}_wall_s"] = round(time.perf_counter() - t0, 4)
        out[f"{name}_process_cpu_s"] = round(time.process_time() - c0, 4)
    out["masks_equal"] = bool(torch.equal(results["ours"] == 0, results["column_loop"] == 0))
    out["max_abs_diff"] = float((results["ours"] - results["column_loop"]).abs().max())
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(DEFAULTS), default="7b")
    p.add_argument("--methods", nargs="+", default=["wanda", "wanda:2:4", "sparsegpt"],
                   help="method[:N:M], e.g. wanda sparsegpt:2:4 magnitude")
    p.add_argument("--nsamples", type=int)
    p.add_argument("--seqlen", type=int)
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"])
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--kernel", metavar="ROWSxCOLS", help="time SparseGPT's OBS step on one random matrix")
    p.add_argument("--config", nargs="+", help="Hydra overrides of a real run instead of a random shape "
                   "(e.g. env=offline model=smollm2-135m calib.nsamples=32)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.kernel and args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for key, value in DEFAULTS[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.kernel:
        print(json.dumps(bench_kernel(args.kernel, args.device, args.seed)), flush=True)
        return
    if args.config:
        args.device = "cpu"                              # the model's own device is read after loading
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("CUDA is not available: run with --shape small (CPU) or --device cpu")
    for spec in args.methods:
        print(json.dumps(bench_one(spec, args)), flush=True)


if __name__ == "__main__":
    main()
