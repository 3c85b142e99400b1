"""Golden fixture for repro/allocation/dsa.py from the DSA reference code (lliai/DSA @ a5ebe65).

Runs the reference's own `lib/autolayer.py` (LayerEngine) and the block-sparsity map of
`lib/prune_all.py::test_prune_wanda_outlier_use_var` (the lines from "# 0-1 scale" to "after adjustment",
executed as written, plus the per-layer `<= 0 -> 0.01` clamp of the same function) on synthetic per-block Wanda
metrics, and writes inputs and outputs to tests/golden/dsa_reference.json.
Nothing is copied into repro: the reference files are read from a checkout at run time.

    git clone https://github.com/lliai/DSA /tmp/DSA && git -C /tmp/DSA checkout a5ebe65
    python tools/golden/dsa_reference.py /tmp/DSA          # needs torch + numpy only (any venv)
"""
import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

GRAPHS = ["W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)", "W:(ABSLOG)-(VAR)-(ATAN)-(7)", "W:(ABS)-(MEAN)-(NO_OP)-(8)",
          "W:(NO_OP)-(STD)-(SIGMOID)-(9)", "W:(MMS)-(ENTROPY)-(LOG)-(7)", "W:(LOG,NORMALIZE)-(L1_NORM)-(TANH)-(10)",
          "W:(POW)-(FROBENIUS_NORM)-(SOFTPLUS)-(7)"]
SPARSITIES = [0.5, 0.7, 0.8]
LAMDA = 0.08


def reference_map(src: str, importances, sparsity):
    """Execute the reference's map (the text between the markers) on `all_layer_ratio`."""
    start = src.rindex("\n", 0, src.index("# 0-1 scale", src.index("def test_prune_wanda_outlier_use_var"))) + 1
    end = src.index('print("after adjustment", all_layer_ratio)', start)
    body = "\n".join(line[4:] for line in src[start:end].splitlines())
    scope = {"np": np, "all_layer_ratio": list(importances),
             "args": types.SimpleNamespace(Lamda=LAMDA, sparsity_ratio=sparsity), "print": lambda *a, **k: None}
    exec(body, scope)
    out = []
    for density in scope["all_layer_ratio"]:          # the per-layer clamp of the same function
        layer_sparsity_ratio = 1 - density
        if layer_sparsity_ratio <= 0:
            layer_sparsity_ratio = 0.01
        out.append(float(layer_sparsity_ratio))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsa_checkout")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests/golden/dsa_reference.json"))
    args = ap.parse_args()
    root = Path(args.dsa_checkout)
    spec = importlib.util.spec_from_file_location("dsa_autolayer", root / "lib/autolayer.py")
    autolayer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(autolayer)
    src = (root / "lib/prune_all.py").read_text()

    gen = torch.Generator().manual_seed(0)
    sigmas = [0.6, 0.8, 1.0, 1.15, 1.25, 1.35, 1.5]          # log-spread per block: var(log) crosses tan(1)
    blocks = [torch.exp(torch.randn(384, generator=gen) * s - 3.0).float() for s in sigmas]
    blocks[2][:5] = 0.0                                      # zeros exercise ABSLOG / LOG / ENTROPY edge rules
    cases = []
    for graph in GRAPHS:
        imps = [autolayer.LayerEngine.from_string(graph).compute_importance(b.clone()) for b in blocks]
        for s in SPARSITIES:
            cases.append({"graph": graph, "sparsity": s, "lam": LAMDA, "importance": imps,
                          "block_sparsity": reference_map(src, imps, s)})
    Path(args.out).write_text(json.dumps({
        "source": "lliai/DSA a5ebe65 lib/autolayer.py + lib/prune_all.py (tools/golden/dsa_reference.py)",
        "torch": torch.__version__, "blocks": [b.tolist() for b in blocks], "cases": cases}, indent=None))
    print(f"wrote {len(cases)} cases to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
