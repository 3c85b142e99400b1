"""Run the ALPS reference (mazumder-lab/ALPS 8af9e6b `alps.py`, unmodified) on small random layers and store what
it returns: tests/golden/alps_reference.pt, read by tests/test_alps.py.

    git -C <ALPS clone> archive 8af9e6b alps.py | tar -x -C /tmp/alps-src
    /work/wt/golden-ref-venv/bin/python tools/golden/alps_fixture.py --src /tmp/alps-src

Runs in the reference environment (tools/golden/requirements-ref.txt: torch 2.13 CPU, transformers 4.46; alps.py
imports only torch, transformers and numpy), never in the project's. Thin glue around the reference, nothing of
it is re-expressed here:
- CPU shims: `Tensor.to("cuda:…")` stays on the CPU and `torch.cuda.synchronize` is a no-op (alps.py hard-codes
  `cuda:0`); device moves only, no numerics;
- per case: a random nn.Linear and random correlated inputs fed through the reference's own `add_batch` (four
  "sequences"), then `ALPS_admm(sp, nm_n, nm_m, rho=0.1)` exactly as llama.py/opt.py call it; the pruned weight
  is stored with the dense weight and the reference's accumulated XtX (before its in-place ridge);
- one direct call of the reference's `cg_batch` (method of ALPS_prune, `self` unused) on a random SPD system.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "alps_reference.pt"
CASES = [  # name, d_out, d_in, sparsity, nm_n (kept), nm_m, seed
    ("unstructured_50", 48, 64, 0.5, 0, 0, 0),
    ("unstructured_70", 48, 64, 0.7, 0, 0, 1),
    ("unstructured_90", 40, 96, 0.9, 0, 0, 2),
    ("unstructured_02", 48, 64, 0.02, 0, 0, 1),     # takes the restart branch (our report: restarts = 1)
    ("unstructured_99", 48, 64, 0.99, 0, 0, 0),     # stops on "no support change once rho has grown"
    ("nm_2_4", 48, 64, 0.5, 2, 4, 3),
    ("nm_4_8", 48, 64, 0.5, 4, 8, 4),
]


def _cpu_shims():
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to
    torch.cuda.synchronize = lambda *a, **k: None


def _inputs(d_in: int, g: torch.Generator, nseq: int = 4, tokens: int = 64) -> torch.Tensor:
    """Correlated features with uneven scales (a few large ones, as LLM activations have)."""
    mix = torch.randn(d_in, d_in, generator=g) / d_in ** 0.5 + torch.eye(d_in)
    scale = torch.rand(d_in, generator=g) * 2 + 0.2
    scale[torch.randperm(d_in, generator=g)[:3]] *= 8
    return (torch.randn(nseq, tokens, d_in, generator=g) @ mix) * scale


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="a directory holding the reference's alps.py (git archive 8af9e6b)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    _cpu_shims()
    sys.path.insert(0, args.src)
    import alps  # noqa: E402  (the reference module)

    torch.set_num_threads(1)
    out = {"reference": "mazumder-lab/ALPS 8af9e6b alps.py", "cases": {}}
    for name, d_out, d_in, sp, nm_n, nm_m, seed in CASES:
        g = torch.Generator().manual_seed(seed)
        layer = nn.Linear(d_in, d_out, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(d_out, d_in, generator=g))
        dense = layer.weight.detach().clone()
        X = _inputs(d_in, g)
        pruner = alps.ALPS_prune(layer, nsamples=X.shape[0], seqlen=X.shape[1])
        for j in range(X.shape[0]):
            pruner.add_batch(X[j:j + 1], layer(X[j:j + 1]).detach())
        xtx = pruner.XtX.clone()
        error = pruner.ALPS_admm(sp=sp, nm_n=nm_n, nm_m=nm_m, rho=0.1)
        out["cases"][name] = {"dense": dense, "xtx": xtx, "sparsity": sp, "nm_n": nm_n, "nm_m": nm_m,
                              "pruned": layer.weight.detach().clone(), "error": float(error)}
        print(f"{name}: zeros {(layer.weight == 0).float().mean():.4f}, relative error {error:.6f}")
    g = torch.Generator().manual_seed(10)
    M = torch.randn(32, 32, generator=g)
    A = M @ M.T / 32 + 0.1 * torch.eye(32)
    rhs = torch.randn(32, 12, generator=g)
    supp = (torch.rand(32, 12, generator=g) > 0.5).float()
    X0 = torch.randn(32, 12, generator=g) * supp
    X = alps.ALPS_prune.cg_batch(None, A, rhs, supp, M_bmm=None, X0=X0, rtol=1e-4, atol=0., maxiter=10)
    out["cg"] = {"A": A, "rhs": rhs, "support": supp, "X0": X0, "X": X}
    torch.save(out, args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
