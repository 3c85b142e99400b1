"""MOSP's stored solution: per linear the shared W, the task weights W_i, the core S_c and the stage-1 column
norms x, written once by a MOSP run under `<run_dir>/mosp/` (one file per block + `manifest.json`). Any
preference's model is assembled from it without data and without re-pruning:

    from repro.methods.mosp_store import MospStore
    store = MospStore(Path(record["run_dir"]) / "mosp")
    store.apply(model, adapter, preference=[0.3, 0.7])     # W_λ into every prunable linear, in place

Weights are stored bit-packed: the keep-mask (`np.packbits`, row-major) and the kept values in the model's weight
dtype (fp16 for the papers' models: the assembled linears are cast to it anyway).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Iterable

import numpy as np
import torch

from repro.methods._admm import Pattern
from repro.methods.alps import layer_pattern
from repro.methods.mosp import LayerSolution, assemble, map_preference

MANIFEST = "manifest.json"


def pack(W: torch.Tensor, dtype: torch.dtype = torch.float32) -> dict:
    keep = W != 0
    return {"shape": list(W.shape), "mask": torch.from_numpy(np.packbits(keep.cpu().numpy().reshape(-1))),
            "values": W[keep].to(dtype).cpu()}


def unpack(d: dict) -> torch.Tensor:
    n = int(np.prod(d["shape"]))
    keep = torch.from_numpy(np.unpackbits(d["mask"].numpy())[:n].astype(bool)).reshape(d["shape"])
    W = torch.zeros(d["shape"], dtype=torch.float32)
    W[keep] = d["values"].to(torch.float32)
    return W


class MospStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def block_file(self, index: int) -> Path:
        return self.path / f"block_{index:04d}.pt"

    def save_block(self, index: int, solutions: Dict[str, LayerSolution], dtype=torch.float32) -> None:
        """Values in `dtype` (the model's weight dtype: what the linears will hold anyway)."""
        self.path.mkdir(parents=True, exist_ok=True)
        data = {name: {"shared": pack(s.shared, dtype), "tasks": [pack(t, dtype) for t in s.tasks],
                       "core": pack(s.core.to(torch.float32)), "x": s.x.to(torch.float32).cpu()}
                for name, s in solutions.items()}
        torch.save(data, self.block_file(index))

    def write_manifest(self, meta: dict) -> None:
        (self.path / MANIFEST).write_text(json.dumps(meta, indent=1, default=str))

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text())

    def layers(self) -> Iterable[tuple]:
        """(full linear name, shared W, [W_i], core bool, x) for every stored linear, block by block."""
        for f in sorted(self.path.glob("block_*.pt")):
            for name, d in torch.load(f).items():
                yield name, unpack(d["shared"]), [unpack(t) for t in d["tasks"]], unpack(d["core"]) != 0, d["x"]

    def apply(self, model, adapter, preference, mapping: str = None, temperature: float = None) -> dict:
        """Assemble W_λ for every stored linear of `model` in place; returns {name: kept count}."""
        meta = self.manifest()
        check_preference("preference", preference, meta["domains"])
        mapped = map_preference(preference, mapping or meta["mapping"], temperature or meta["temperature"])
        linears = adapter.all_linears(model)
        kept = {}
        for name, W, tasks, core, x in self.layers():
            lin = linears[name]
            pat = layer_pattern_of(meta, W.numel())
            Wl = assemble(W, tasks, core, x, mapped, pat, meta["assembly_score"])
            lin.weight.data.copy_(Wl.to(lin.weight.device, lin.weight.dtype))
            kept[name] = int((Wl != 0).sum())
        return kept


def check_preference(field: str, lam, domains) -> None:
    """λ: one non-negative weight per domain, summing to 1 (else a ConfigError naming `field`)."""
    from repro.config import ConfigError

    try:
        ok = len(lam) == len(domains) and min(float(v) for v in lam) >= 0 and abs(sum(map(float, lam)) - 1) <= 1e-6
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(field, lam, f"{len(domains)} non-negative weights summing to 1 (domains: "
                          f"{', '.join(domains)})")


def layer_pattern_of(meta: dict, numel: int) -> Pattern:
    return layer_pattern(numel, meta["sparsity"], SimpleNamespace(**meta["pattern"]))


def assemble_main(argv=None) -> None:
    """`python -m repro.methods.mosp_store <run_dir> --preference 0.3,0.7 --out DIR`: the preference's model,
    assembled from a finished MOSP run's store (no data, no pruning), saved with `save_pretrained`."""
    import argparse

    from repro.config import ConfigError, load_run_config
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.record import read_record

    p = argparse.ArgumentParser(prog="python -m repro.methods.mosp_store", description=assemble_main.__doc__)
    p.add_argument("run_dir")
    p.add_argument("--preference", required=True, help="comma-separated λ, one per domain, summing to 1")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    record = read_record(Path(args.run_dir))
    store = MospStore(Path(args.run_dir) / "mosp")
    if record is None or not (store.path / MANIFEST).is_file():
        raise ConfigError("run_dir", args.run_dir, "the folder of a finished score=mosp run (result.json and "
                          "mosp/manifest.json)", "Extension-1 runs store no task weights; rerun an unfinished one.")
    meta = store.manifest()
    try:
        lam = [float(v) for v in args.preference.split(",")]
    except ValueError:
        lam = None
    check_preference("--preference", lam if lam is not None else args.preference, meta["domains"])
    run = load_run_config(record["config"])
    model, tokenizer = load_model(run.model, seed=run.seed)
    store.apply(model, adapter_for(model), lam)
    model.save_pretrained(args.out)
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(args.out)
    print(f"preference {lam} of {args.run_dir} -> {args.out}")


if __name__ == "__main__":
    assemble_main()
