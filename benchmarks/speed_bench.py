"""Inference-speed benchmark: dense vs 2:4-pruned, prefill and decode tokens/s, through the real run path.

    python benchmarks/speed_bench.py                          # LLaMA-2-7B shape, fp16, CUDA (2:4 semi-structured)
    python benchmarks/speed_bench.py --shape small            # reduced LLaMA shape on CPU, fp32 (dense kernel)
    python benchmarks/speed_bench.py --model smollm2-135m     # a model of conf/model/ instead of a random shape
    python benchmarks/speed_bench.py --shape small --batch-size 8 --input-tokens 32 --output-tokens 64
    python benchmarks/speed_bench.py --model smollm2-135m --interleave --cpu-threads 1   # fair on a loaded CPU

Each case is one `repro.run.execute` with `score=magnitude pattern=nm_2_4 eval=speed` and no perplexity: the run
measures the dense model before pruning (`metrics.speed_dense`), prunes 2:4, measures again (`metrics.speed`,
kernel `auto`: semi-structured on a capable GPU, dense elsewhere) and records the speed-ups. Random weights stand
in for a checkpoint (speed depends on the shape, not on the values). Protocol defaults: Lua-LLM's batch 8,
32 input tokens, 256 output tokens. One JSON line per case; recorded output: benchmarks/SPEED_RESULTS.md. `--interleave` instead
keeps a dense and a pruned copy in one process and alternates their measurements (twice the memory).
On a shared CPU the wall-clock numbers depend on the load: compare dense and pruned of the same run only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile

from shapes import SHAPES as _SHAPES  # noqa: E402

# the 7B shape from shapes.py; this benchmark's own `small` (MLP 1536, the shape of SPEED_RESULTS.md's CPU lines)
SHAPES = {"7b": _SHAPES["7b"],
          "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048)}
DEFAULTS = {"7b": dict(dtype="float16", device="cuda"), "small": dict(dtype="float32", device="cpu")}


def overrides_for(args) -> list[str]:
    if args.model:
        model = [f"model={args.model}"]
    else:
        sizes = ",".join(f"{k}:{v}" for k, v in SHAPES[args.shape].items())
        model = ["model=tiny-llama", f"model.name=random-llama-{args.shape}", "model.tokenizer=null",
                 f"model.random_init={{model_type:llama,tie_word_embeddings:false,{sizes}}}"]
    defaults = DEFAULTS[args.shape]
    if args.model:   # a named model: the GPU in fp16 when there is one, else the CPU in fp32
        import torch

        defaults = DEFAULTS["7b"] if torch.cuda.is_available() else DEFAULTS["small"]
    return model + [
        f"model.dtype={args.dtype or defaults['dtype']}", f"model.device={args.device or defaults['device']}",
        "score=magnitude", "pattern=nm_2_4", "sparsity=0.5", "calib=none", "eval=speed", "eval.ppl.datasets=[]",
        f"eval.speed.batch_size={args.batch_size}", f"eval.speed.input_tokens={args.input_tokens}",
        f"eval.speed.output_tokens={args.output_tokens}", f"eval.speed.repeats={args.repeats}",
        f"eval.speed.warmup={args.warmup}", f"eval.speed.kernel={args.kernel}", "force=true",
        f"eval.speed.sparse_backend={args.sparse_backend}",
        f"eval.speed.cpu_threads={args.cpu_threads or 'null'}",
        f"paths.results={args.results or tempfile.mkdtemp(prefix='speed-bench-')}",
    ]


def interleaved(run) -> dict:
    """Dense and pruned copies in one process, measured alternately (one repeat each, in turn), so that a changing
    load on a shared machine hits both alike. Needs twice the model's memory: small models only."""
    import copy
    import dataclasses
    import statistics
    from contextlib import nullcontext

    import torch

    from repro.eval.speed import choose_kernel, measure, random_prompt, semi_structured_weights, speedups
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.prune.pipeline import measure_sparsity, prune_model

    cfg = run.eval.speed
    dense, tok = load_model(run.model, seed=run.seed)
    pruned = copy.deepcopy(dense)
    prune_model(pruned, adapter_for(pruned), run, None)
    weight = dense.get_input_embeddings().weight
    linears = adapter_for(pruned).all_linears(pruned)
    kernel, reason = choose_kernel(cfg.kernel, linears, weight.device, weight.dtype, cfg.sparse_backend)
    prompt = random_prompt(cfg, min(dense.config.vocab_size, len(tok)), weight.device)
    if cfg.cpu_threads and weight.device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    once = dataclasses.replace(cfg, warmup=0, repeats=1)
    rows = {"dense": [], "pruned": []}
    with semi_structured_weights(linears, cfg.sparse_backend) if kernel == "semi_structured" else nullcontext():
        for i in range(cfg.warmup + cfg.repeats):
            for label, model in (("dense", dense), ("pruned", pruned)):
                result = measure(model, prompt, once, desc=f"{label} {i}")
                if i >= cfg.warmup:
                    rows[label].append(result)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for label, rs in rows.items()}
    return {"mode": "interleaved", "model": run.model.name, "dtype": run.model.dtype,
            "device": str(weight.device), "threads": torch.get_num_threads(), "kernel_pruned": kernel,
            "kernel_reason": reason, "sparsity": measure_sparsity(pruned, adapter_for(pruned))["overall"],
            "protocol": {k: getattr(cfg, k) for k in ("batch_size", "input_tokens", "output_tokens", "warmup",
                                                      "repeats")},
            **{label: {k: round(v, 2) for k, v in m.items() if k.endswith("_tok_s")} for label, m in med.items()},
            "speedup": {k: round(v, 3) for k, v in speedups(med["dense"], med["pruned"]).items()},
            "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    p.add_argument("--model", help="a conf/model name instead of a random shape (e.g. smollm2-135m)")
    p.add_argument("--dtype")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cpu-threads", type=int, help="torch threads while measuring on CPU")
    p.add_argument("--kernel", default="auto", choices=["auto", "dense", "semi_structured"])
    p.add_argument("--sparse-backend", default="cusparselt", choices=["cusparselt", "cutlass"])
    p.add_argument("--results", help="results directory (default: a temp dir)")
    p.add_argument("--interleave", action="store_true",
                   help="measure dense and pruned copies alternately in one process (fair on a loaded machine)")
    args = p.parse_args(argv)

    from hydra import compose, initialize_config_dir

    from repro.config import load_run_config
    from repro.run import CONF_DIR, execute

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        run = load_run_config(compose("config", overrides=overrides_for(args)))
    if args.interleave:
        print(json.dumps(interleaved(run)))
        return 0
    record = execute(run)
    dense, pruned = record["metrics"]["speed_dense"], record["metrics"]["speed"]
    proto = record["protocol"]["speed"]
    print(json.dumps({
        "model": run.model.name, "dtype": run.model.dtype, "device": proto["device"],
        "protocol": {k: proto[k] for k in ("batch_size", "input_tokens", "output_tokens", "warmup", "repeats")},
        "kernel_dense": record["protocol"]["speed_dense"]["kernel"], "kernel_pruned": proto["kernel"],
        "kernel_reason": proto["kernel_reason"], "sparse_backend": proto.get("sparse_backend"), "tensor_classes": proto["weight_tensor_classes"],
        "sparsity": record["sparsity"]["overall"],
        "dense": {k: round(dense[k], 2) for k in ("prefill_tok_s", "decode_tok_s", "generate_tok_s")},
        "pruned": {k: round(pruned[k], 2) for k in ("prefill_tok_s", "decode_tok_s", "generate_tok_s")},
        "speedup": {k: round(v, 3) for k, v in pruned.items() if k.endswith("_speedup")},
        "torch": proto["torch"], "run_dir": record["run_dir"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
