"""Stored pruned models: prune once, evaluate many times.

`<paths.results>/pruned/<prune_id>/` holds what a prune stage produced, so every evaluation (and recovery) of the
same prune reuses it instead of pruning again:
- `masks.npz`      one bit-packed keep-mask per prunable linear (`np.packbits` of `weight != 0`, row-major);
- `weights.safetensors`  the full weights of every linear a weight-updating method pruned (`Scorer.updates_weights`:
                   SparseGPT, ALPS); a mask-only method (magnitude, Wanda, DSnoT...) stores none. The method declares
                   it (no copy of the dense weights is kept to compare with; tests/test_store.py checks each claim);
- `manifest.json`  the prune report (allocation report included), each linear's shape and zero count, the
                   SHA-256 of both files and `built_by` (the git commit of the code that pruned; a record that
                   reuses the prune carries it). Written last: a folder without a manifest is not a stored prune.
A stored prune is verified before reuse (file checksums, then each linear's zero count and shape after applying
it to the freshly loaded dense model) and rebuilt when anything disagrees. It is written to a temporary folder and
renamed into place; `prune_lock` (a file lock next to it) makes two jobs of the same prune build it once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from repro.record import git_commit

log = logging.getLogger(__name__)

MANIFEST, MASKS, WEIGHTS = "manifest.json", "masks.npz", "weights.safetensors"
STORE_VERSION = 1


def stored_dir(results: str | Path, prune_id: str) -> Path:
    return Path(results) / "pruned" / prune_id


def prune_lock(path: Path):
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.parent / f".{path.name}.lock"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model, adapter, path: Path, report: dict, changed: set) -> dict:
    """Store the pruned state of `model` (in place after `prune_model`) under `path`; return the manifest."""
    from safetensors.torch import save_file

    linears = adapter.all_linears(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        masks, layers = {}, {}
        for name, lin in linears.items():
            keep = (lin.weight.detach() != 0).cpu().numpy()
            masks[name] = np.packbits(keep.reshape(-1))
            layers[name] = {"shape": list(keep.shape), "zeros": int(keep.size - keep.sum())}
        np.savez(tmp / MASKS, **masks)
        files = {MASKS: _sha256(tmp / MASKS)}
        updated = sorted(n for n in changed if n in linears)
        if updated:
            save_file({n: linears[n].weight.detach().cpu().contiguous() for n in updated}, str(tmp / WEIGHTS))
            files[WEIGHTS] = _sha256(tmp / WEIGHTS)
        manifest = {"store_version": STORE_VERSION, "report": report, "layers": layers,
                    "updated_weights": updated, "files": files, "built_by": git_commit()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _problem(path: Path) -> tuple[Optional[dict], str]:
    """(manifest, '') when the stored files are intact; (None, why) otherwise."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return None, f"no readable {MANIFEST} ({type(e).__name__})"
    if manifest.get("store_version") != STORE_VERSION:
        return None, f"store version {manifest.get('store_version')} (expected {STORE_VERSION})"
    for name, digest in manifest.get("files", {}).items():
        if not (path / name).is_file() or _sha256(path / name) != digest:
            return None, f"{name} is missing or its checksum differs"
    return manifest, ""


@torch.no_grad()
def load(model, adapter, path: Path) -> Optional[dict]:
    """Apply a stored prune to the freshly loaded dense `model`; its manifest, or None (model untouched) when the
    store is absent or damaged (the caller rebuilds it)."""
    from safetensors.torch import load_file

    if not path.is_dir():
        return None
    manifest, why = _problem(path)
    linears = adapter.all_linears(model)
    if manifest is not None and set(manifest["layers"]) != set(linears):
        manifest, why = None, "its linears are not this model's"
    if manifest is None:
        log.warning("stored pruned model %s is damaged (%s): rebuilding it", path, why)
        return None
    masks = np.load(path / MASKS)
    weights = load_file(str(path / WEIGHTS)) if manifest["updated_weights"] else {}
    for name, lin in linears.items():            # verify everything before touching the model
        info, w = manifest["layers"][name], lin.weight
        if list(w.shape) != info["shape"]:
            return _damaged(path, f"{name} has shape {list(w.shape)}, stored {info['shape']}")
        keep = _keep(masks[name], w)
        src = weights[name].to(w.dtype) if name in weights else w.detach().cpu()
        zeros = int(((src == 0) | ~keep).sum().item())
        if zeros != info["zeros"]:
            return _damaged(path, f"{name} would have {zeros} zeros, stored {info['zeros']}")
    for name, lin in linears.items():
        w = lin.weight
        if name in weights:
            w.copy_(weights[name].to(w.dtype))
        w[~_keep(masks[name], w).to(w.device)] = 0
    return manifest


def _keep(packed: np.ndarray, w: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed, count=w.numel()).reshape(w.shape).astype(bool))


def _damaged(path: Path, why: str) -> None:
    log.warning("stored pruned model %s does not verify (%s): rebuilding it", path, why)
    return None
