"""Run EoRA's eigenspace compensation (NVlabs/EoRA 11ff6c0 `EoRA/eora.py` `llama_sequential_eigen`, unmodified) on
a small synthetic two-block model and store what it returns: tests/golden/eora_reference.pt, read by
tests/test_eora_golden.py.

    mkdir -p /tmp/eora-src && git -C <EoRA clone> archive 11ff6c0 EoRA | tar -x -C /tmp/eora-src
    /work/wt/golden-ref-venv/bin/python tools/golden/eora_fixture.py --src /tmp/eora-src/EoRA

Runs in the reference environment (tools/golden/requirements-ref.txt), never in the project's. Thin glue, nothing
of the reference re-expressed:
- imports: eora.py star-imports its sibling modules; `evaluate_utils` (lm_eval 0.3, datasets) is an empty
  stand-in module (eora.py only imports `evaluate_model` from it; `llama_sequential_eigen` never calls it).
  wanda/sparsegpt/modelutils/quant/gptq are the reference's own files (torch/transformers only).
- `args` is the module global the reference reads (`eigen_nsamples`, `eigen_r`), set as its argparse would.
- CPU shim (alps_fixture's): `Tensor.to("cuda…")` stays on the CPU (the function hard-codes `.to("cuda")`).
- a spy on `torch.linalg.eigh` records the second-moment matrix the reference accumulated for each linear (its
  hooks' running update `M·n/(n+1) + XᵀX/n`, n = eigen_nsamples), so the test can give our pure function the
  very same matrix; the spy returns eigh's own result.
- the model: the reference's function needs only `model.model.{layers, embed_tokens, norm}`, `model.seqlen`,
  `model.config.{use_cache, hidden_size}` and blocks called as `layer(x, attention_mask=…)[0]`; here two residual blocks
  x + fc2(tanh(fc1(x))) (fc1: h→m, fc2: m→h, no bias) with seeded weights, the "compressed" weights = the dense
  ones under a 50 % unstructured magnitude mask (case `unstructured`) or a 2:4 mask (case `nm_2_4`), and seeded
  calibration activations with a few large channels fed as the embeddings (embed_tokens = identity).
  Case `rank_deficient`: fewer calibration tokens than fc1's input width, so C has (numerically) negative
  eigenvalues and the reference's lift `L[L < 0] = min(L[L > 0])` runs.
Stored per case: the calibration activations, per linear the dense and compressed weights, the reference's C (as
passed to eigh; stored as float32, lossless: the reference accumulates it in float32 and casts to float64 for eigh) and its lora_A / lora_B (rank r).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from alps_fixture import _cpu_shims   # tools/golden/ (this script's folder) is on sys.path

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "eora_reference.pt"
CASES = [  # name, hidden, intermediate, nsamples, seqlen, rank, mask, seed
    ("unstructured", 32, 48, 4, 16, 8, "unstructured", 0),
    ("nm_2_4", 32, 48, 4, 16, 12, "nm_2_4", 1),
    ("rank_deficient", 32, 48, 1, 24, 8, "unstructured", 2),
]


def _stub_imports() -> None:
    mod = types.ModuleType("evaluate_utils")
    mod.__spec__ = importlib.machinery.ModuleSpec("evaluate_utils", None)
    mod.evaluate_model = None
    sys.modules["evaluate_utils"] = mod


class Block(nn.Module):
    def __init__(self, h: int, m: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(h, m, bias=False), nn.Linear(m, h, bias=False)

    def forward(self, x, attention_mask=None, **kwargs):
        return (x + self.fc2(torch.tanh(self.fc1(x))),)


class Model(nn.Module):
    """What `llama_sequential_eigen` touches of a LlamaForCausalLM."""

    def __init__(self, h: int, m: int, nblocks: int, seqlen: int):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens, self.model.norm = nn.Identity(), nn.Identity()
        self.model.layers = nn.ModuleList(Block(h, m) for _ in range(nblocks))
        self.config = types.SimpleNamespace(use_cache=False, hidden_size=h)
        self.seqlen = seqlen

    def forward(self, x):
        x = self.model.embed_tokens(x)
        for layer in self.model.layers:
            x = layer(x, attention_mask=None)[0]
        return self.model.norm(x)


def _mask(w: torch.Tensor, kind: str) -> torch.Tensor:
    """Keep-mask by magnitude: half of each row (unstructured) or 2 of every 4 inputs (nm_2_4)."""
    a = w.abs()
    if kind == "nm_2_4":
        groups = a.reshape(a.shape[0], -1, 4)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, groups.topk(2, dim=2).indices, True)
        return keep.reshape(w.shape)
    keep = torch.zeros_like(a, dtype=torch.bool)
    return keep.scatter_(1, a.topk(w.shape[1] // 2, dim=1).indices, True)


def _activations(n: int, seqlen: int, h: int, g: torch.Generator) -> torch.Tensor:
    mix = torch.randn(h, h, generator=g) / h ** 0.5 + torch.eye(h)
    scale = torch.rand(h, generator=g) + 0.5
    scale[torch.randperm(h, generator=g)[:2]] *= 6
    return (torch.randn(n, seqlen, h, generator=g) @ mix) * scale


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="NVlabs/EoRA 11ff6c0's EoRA/ directory (eora.py and siblings)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    _stub_imports()
    _cpu_shims()
    sys.path.insert(0, args.src)
    import eora  # noqa: E402  (the reference module)

    seen = []
    eigh = torch.linalg.eigh

    def spy(a, *rest, **kw):
        seen.append(a.detach().clone())
        return eigh(a, *rest, **kw)

    torch.linalg.eigh = spy
    torch.set_num_threads(1)
    out = {"reference": "NVlabs/EoRA 11ff6c0 EoRA/eora.py llama_sequential_eigen", "cases": {}}
    for name, h, m, nsamples, seqlen, rank, kind, seed in CASES:
        g = torch.Generator().manual_seed(seed)
        model = Model(h, m, 2, seqlen)
        for lin in (mod for mod in model.modules() if isinstance(mod, nn.Linear)):
            lin.weight.data = torch.randn(lin.weight.shape, generator=g) / lin.weight.shape[1] ** 0.5
        compressed = {f"model.layers.{i}.{n}": lin.weight.data * _mask(lin.weight.data, kind)
                      for i, blk in enumerate(model.model.layers) for n, lin in (("fc1", blk.fc1), ("fc2", blk.fc2))}
        dense = {k: model.get_submodule(k).weight.data.clone() for k in compressed}
        acts = _activations(nsamples, seqlen, h, g)
        loader = [(acts[j:j + 1], None) for j in range(nsamples)]
        eora.args = types.SimpleNamespace(eigen_nsamples=nsamples, eigen_r=rank)
        seen.clear()
        lowrank = eora.llama_sequential_eigen(model, loader, compressed, "cpu")
        case = {"rank": rank, "activations": acts, "linears": {}}
        for k, cov in zip(compressed, seen):        # the reference visits block by block, fc1 then fc2
            pre = f"base_model.model.{k}"
            case["linears"][k] = {"dense": dense[k], "compressed": compressed[k], "cov": cov.float(),
                                  "lora_A": lowrank[f"{pre}.lora_A.weight"], "lora_B": lowrank[f"{pre}.lora_B.weight"]}
            lam = torch.linalg.eigvalsh(cov)
            print(f"{name} {k}: C {tuple(cov.shape)} eig min {lam.min():.3g} negative {int((lam < 0).sum())} "
                  f"|BA| {(case['linears'][k]['lora_B'] @ case['linears'][k]['lora_A']).norm():.4f}")
        assert len(seen) == len(compressed), (len(seen), len(compressed))
        out["cases"][name] = case
    torch.save(out, args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
