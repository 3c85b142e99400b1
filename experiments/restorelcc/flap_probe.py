"""Why does FLAP's bias compensation (`recovery=flap`) raise SmolLM2's perplexity?  A diagnostic, not a method.

Loads SmolLM2-135M, applies a stored prune (default: the Wanda 50 % prune of `score=wanda sparsity=0.5 env=offline`,
results/pruned/6d8e20047d3a6a9b), and evaluates WikiText-2 ppl (env=offline: 16 × 512 windows) with o_proj/down_proj
biases computed in several ways (b = W_dense − W_pruned applied to some mean input x̄, or a mean-output match):

    none        no bias (the pruned model)
    flap        x̄ over all calibration tokens of the DENSE model, dense propagation (recovery=flap, FLAP's `compress`)
    flap_no0    as flap, position 0 of each window left out of x̄
    flap_all    as flap, on every linear (q/k/v/gate/up too)
    pruned_in   x̄ of the PRUNED model's inputs (no biases while measuring)
    seq         x̄ of the pruned model's inputs with the biases of every earlier linear already applied
    match_seq   b = W_d x̄_dense − W_p x̄_seq: each layer's mean output equals the dense layer's mean output
    oracle      as flap, x̄ measured on the evaluation windows themselves (test-domain means: a diagnostic only)
    seq128      as flap, x̄ from 128-token calibration windows (FLAP's seqlen), 4× as many windows
    half        0.5 × flap

Usage (repo root):  OMP_NUM_THREADS=2 nice -n 10 python experiments/restorelcc/flap_probe.py [variant ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import compose_run  # noqa: E402
from repro import store  # noqa: E402
from repro.data.calibration import load_calibration  # noqa: E402
from repro.data.perplexity import load_ppl_stream  # noqa: E402
from repro.eval.perplexity import perplexity  # noqa: E402
from repro.models.adapter import adapter_for  # noqa: E402
from repro.models.loading import load_model  # noqa: E402
from repro.prune.engine import capture_block_inputs, forward_block  # noqa: E402
from repro.recovery.flap import compensation_bias  # noqa: E402

TARGETS = ("self_attn.o_proj", "mlp.down_proj")
VARIANTS = ("none", "flap", "flap_no0", "flap_all", "pruned_in", "seq", "match_seq", "oracle", "seq128", "half")


@torch.no_grad()
def block_means(block, inputs, names):
    """{rel name: (mean over all tokens, mean without position 0)} of the named linears' inputs; block outputs."""
    sums = {}
    hooks = []
    for rel in names:
        lin = block.get_submodule(rel)

        def hook(module, args, rel=rel):
            x = args[0].double()
            s = sums.setdefault(rel, [0, 0, 0])
            s[0] = s[0] + x.sum((0, 1))
            s[1] = s[1] + x[:, 0].sum(0)
            s[2] += x.shape[0] * x.shape[1]
        hooks.append(lin.register_forward_pre_hook(hook))
    try:
        outs = forward_block(block, inputs)
    finally:
        for h in hooks:
            h.remove()
    means = {}
    for rel, (s, s0, n) in sums.items():
        seqs = n // inputs.batches[0].shape[1]
        means[rel] = ((s / n).float(), ((s - s0) / (n - seqs)).float())
    return means, outs


def set_bias(lin, b):
    lin.bias = torch.nn.Parameter(b.to(lin.weight.dtype).clone(), requires_grad=False) if b is not None else None


@torch.no_grad()
def means_pass(model, adapter, ids, names, propagate_weights=None):
    """Per-block input means of `names` (relative), the model as it is (inputs propagated through it)."""
    inputs = capture_block_inputs(model, adapter, ids, batch_size=4)
    out = []
    for block in adapter.blocks(model):
        m, outs = block_means(block, inputs, names)
        out.append(m)
        inputs.batches = outs
    return out


@torch.no_grad()
def sequential_biases(model, adapter, ids, dense, pruned, match: bool):
    """Block by block, linear by linear: measure the pruned model's input mean with every earlier bias applied."""
    inputs = capture_block_inputs(model, adapter, ids, batch_size=4)
    biases, prefix = {}, adapter.block_prefix
    for i, block in enumerate(adapter.blocks(model)):
        for rel in TARGETS:                       # o_proj first: down_proj's input depends on o_proj's bias
            m, _ = block_means(block, inputs, [rel])
            name = f"{prefix(i)}.{rel}"
            x = m[rel][0]
            if match:
                b = (dense[name].double() @ match[name].double() - pruned[name].double() @ x.double())
            else:
                b = compensation_bias(dense[name], pruned[name], x)
            biases[name] = b.float()
            set_bias(block.get_submodule(rel), biases[name])
        inputs.batches = forward_block(block, inputs)
    return biases


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--prune", default=str(ROOT / "results/pruned/6d8e20047d3a6a9b"))
    ap.add_argument("--out", default=str(ROOT / "results/runs/flap_probe/flap_probe.jsonl"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="a Hydra override")
    args = ap.parse_args()
    torch.manual_seed(0)
    run = compose_run("model=smollm2-135m", "env=offline", "score=wanda", "sparsity=0.5", *args.overrides)
    model, tok = load_model(run.model, seed=run.seed)
    adapter = adapter_for(model)
    linears = adapter.all_linears(model)
    seqlen = run.model.seqlen
    calib = load_calibration(run.calib, tok, seqlen).input_ids
    stream, _ = load_ppl_stream("wikitext2", run.data.wikitext2, tok, seqlen)
    evalwin = stream[0, : run.eval.ppl.max_windows * seqlen].view(-1, seqlen)

    def ppl():
        return perplexity(model, stream, seqlen, run.eval.ppl.batch_size, run.eval.ppl.max_windows)[0]

    dense = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    manifest = store.load(model, adapter, Path(args.prune))
    assert manifest is not None, args.prune
    pruned = {n: lin.weight.detach().clone() for n, lin in linears.items()}
    every = adapter.linear_names

    def swap(weights):
        for n, lin in linears.items():
            lin.weight.copy_(weights[n])

    def clear():
        for lin in linears.values():
            set_bias(lin, None)

    cache = {}

    def dense_means(key, ids, names):
        disk = Path(args.out).with_name(f"flap_probe_means_{key}_{len(names)}.pt")      # reused across runs
        if key not in cache and disk.is_file():
            cache[key] = torch.load(disk)
        if key not in cache:
            swap(dense)
            cache[key] = means_pass(model, adapter, ids, names)
            swap(pruned)
            torch.save(cache[key], disk)
        return cache[key]

    def from_means(means, names, which=0, scale=1.0):
        b = {}
        for i, m in enumerate(means):
            for rel in names:
                n = f"{adapter.block_prefix(i)}.{rel}"
                b[n] = scale * compensation_bias(dense[n], pruned[n], m[rel][which]).float()
        return b

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for v in args.variants:
        t0 = time.perf_counter()
        clear()
        if v == "none":
            biases = {}
        elif v in ("flap", "flap_no0", "half"):
            biases = from_means(dense_means("dense", calib, every), TARGETS, which=int(v == "flap_no0"),
                                scale=0.5 if v == "half" else 1.0)
        elif v == "flap_all":
            biases = from_means(dense_means("dense", calib, every), every)
        elif v == "oracle":
            biases = from_means(dense_means("eval", evalwin, every), TARGETS)
        elif v == "seq128":
            cal128 = load_calibration(dataclasses.replace(run.calib, nsamples=4 * run.calib.nsamples),
                                      tok, 128).input_ids
            biases = from_means(dense_means("d128", cal128, every), TARGETS)
        elif v == "pruned_in":
            biases = from_means(means_pass(model, adapter, calib, TARGETS), TARGETS)
        elif v in ("seq", "match_seq"):
            match = None
            if v == "match_seq":
                dm = dense_means("dense", calib, every)
                match = {f"{adapter.block_prefix(i)}.{rel}": m[rel][0] for i, m in enumerate(dm) for rel in TARGETS}
            biases = sequential_biases(model, adapter, calib, dense, pruned, match)
            clear()
        else:
            raise SystemExit(f"unknown variant {v}; choose from {VARIANTS}")
        for n, b in biases.items():
            set_bias(linears[n], b)
        value = ppl()
        norm = float(sum(b.norm() for b in biases.values()) / max(len(biases), 1))
        row = {"variant": v, "ppl": round(value, 3), "biases": len(biases), "bias_norm_mean": round(norm, 4),
               "seconds": round(time.perf_counter() - t0, 1), "prune": Path(args.prune).name,
               "overrides": args.overrides}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    clear()


if __name__ == "__main__":
    main()
