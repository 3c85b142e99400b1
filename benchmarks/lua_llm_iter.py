"""Lua-LLM training-step benchmark: seconds per iteration (and peak memory) of the threshold optimisation.

    python benchmarks/lua_llm_iter.py                              # LLaMA-2-7B shape, 1 x 2048 tokens, bf16, CUDA
    python benchmarks/lua_llm_iter.py --shape small --iters 5      # reduced LLaMA shape on CPU (fp32, 256 tokens)
    python benchmarks/lua_llm_iter.py --config env=offline model=smollm2-135m --seqlen 512 --iters 5
                                                                   # a real model through Hydra
    python benchmarks/lua_llm_iter.py --no-checkpointing           # keep every block's activations and masks

One step = forward of the masked model (every q,k,v,o,gate,up,down weight parametrized by σ(C(s − t))), CE +
16·|log(R/ρ)| with the STE kept ratio, backward to the thresholds, AdamW — `repro.allocation.lua_llm_train
.train_thresholds`, the code path `allocation=lua_llm` runs. Ranks come from a random metric (the score pass is not
part of a step). Printed: one JSON line with the median seconds per step after the first (warm-up) step, the
first step, peak memory (CUDA: max_memory_allocated; CPU: peak RSS of the process) and the settings.
Paper: LLaMA-7B, 500 steps in about 1 h on 2 A100-80GB (≈ 7 s per step with 2 windows). Results: the table in
experiments/lua_llm/NOTES.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics

import torch

from shapes import build_model  # noqa: E402

DEFAULTS = {"7b": dict(seqlen=2048, dtype="bfloat16", device="cuda"),
            "small": dict(seqlen=256, dtype="float32", device="cpu")}


def config_model(overrides):
    from hydra import compose, initialize_config_dir

    from repro.config import load_run_config
    from repro.models.loading import load_model
    from repro.run import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        run = load_run_config(compose("config", overrides=list(overrides)))
    return load_model(run.model)[0]


def main() -> None:
    from repro.allocation import lua_llm_train as T
    from repro.models.adapter import adapter_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(DEFAULTS), default="7b")
    ap.add_argument("--config", nargs="*", help="Hydra overrides of a real model instead of --shape")
    ap.add_argument("--seqlen", type=int)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    defaults = DEFAULTS["small" if args.config else args.shape]
    if args.config is not None:
        model, label = config_model(args.config), " ".join(args.config)
    else:
        model, label = build_model(args.shape, getattr(torch, defaults["dtype"]), defaults["device"]), args.shape
    device = next(model.parameters()).device
    seqlen = args.seqlen or defaults["seqlen"]
    adapter = adapter_for(model)
    linears = adapter.all_linears(model)
    g = torch.Generator(device="cpu").manual_seed(0)
    layers = [T.MaskedLayer(n, l, torch.nn.Parameter(torch.full((l.out_features,), args.sparsity, device=device)),
                            T.descending_ranks(torch.rand(l.weight.shape, generator=g).to(device)),
                            T.gqa_count_weight(n, l, linears)) for n, l in linears.items()]
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.iters * args.batch, seqlen), generator=g)
    amp = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.enable_grad():
        result = T.train_thresholds(
            model, layers, lambda i: ids[i * args.batch:(i + 1) * args.batch], 1 - args.sparsity,
            iterations=args.iters, lr=5e-3, weight_decay=0.05, lam=16.0, autocast_dtype=amp,
            checkpoint_blocks=None if args.no_checkpointing else adapter.blocks(model), progress=False)
    steps = [h["s"] for h in result.history]
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    print(json.dumps({
        "model": label, "device": str(device), "dtype": str(next(model.parameters()).dtype), "seqlen": seqlen,
        "batch": args.batch, "checkpointing": not args.no_checkpointing, "iters": args.iters,
        "first_step_s": round(steps[0], 3), "median_step_s": round(statistics.median(steps[1:] or steps), 3),
        "peak_gib": round(peak, 2), "threads": torch.get_num_threads(), "cpu": platform.processor() or "?",
        "final_kept_ratio": round(result.history[-1]["kept_ratio"], 5)}))


if __name__ == "__main__":
    main()
