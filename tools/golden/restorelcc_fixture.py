"""Run RestoreLCC's component extraction (zijian678/restorelcc b1a8e09 `utils/components.py`, unmodified) on small
synthetic dZ = Z_dense - Z_pruned matrices and store what it returns: tests/golden/restorelcc_components.pt, read by
tests/test_restorelcc_math.py.

    mkdir -p /tmp/lcc-src/utils
    git -C <restorelcc clone> show b1a8e09:utils/components.py > /tmp/lcc-src/utils/components.py
    /work/wt/golden-ref-venv/bin/python tools/golden/restorelcc_fixture.py --src /tmp/lcc-src

Runs in the reference environment (tools/golden/requirements-ref.txt), never in the project's. Thin glue, nothing
of the reference re-expressed: components.py imports pyvene, sentence_transformers and sklearn at module level (not in
the reference venv) but `obtain_main_components` uses only torch, so those three are empty stand-in modules here (any call into them
would fail; transformers is imported first, as it probes for sklearn). Per case: a seeded random dZ (n x d_h, with a few dominant directions, n below and above d_h) and the
reference's return values for k = 1 (the paper's K) and k = 10 (the code's default): the lost component
(`added_act`, fp16) and the padded, row-normalised directions (`Vt`, fp16).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import sys
import types
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "restorelcc_components.pt"
CASES = [("n_below_dh", 12, 16, 0), ("n_above_dh", 64, 16, 1), ("llama_like", 200, 32, 2)]   # name, n, d_h, seed


def _stub_imports() -> None:
    for name in ("pyvene", "sentence_transformers", "sklearn", "sklearn.model_selection", "sklearn.metrics",
                 "sklearn.metrics.pairwise"):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules["sentence_transformers"].SentenceTransformer = sys.modules["sentence_transformers"].util = None
    sys.modules["sklearn.model_selection"].train_test_split = None
    sys.modules["sklearn.metrics.pairwise"].cosine_similarity = None


def _delta(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """A few strong shared directions (a systematic pruning shift) plus noise."""
    dirs = torch.randn(3, d, generator=g)
    coef = torch.randn(n, 3, generator=g) * torch.tensor([4.0, 2.0, 1.0]) + torch.tensor([2.0, -1.0, 0.5])
    return coef @ dirs + 0.3 * torch.randn(n, d, generator=g)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="a directory holding utils/components.py (restorelcc b1a8e09)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    import transformers  # noqa: F401  (imported before the stand-ins: it probes for sklearn)
    _stub_imports()
    sys.path.insert(0, args.src)
    from utils import components  # noqa: E402  (the reference module)

    torch.set_num_threads(1)
    out = {"reference": "zijian678/restorelcc b1a8e09 utils/components.py obtain_main_components", "cases": {}}
    for name, n, d, seed in CASES:
        dz = _delta(n, d, torch.Generator().manual_seed(seed))
        case = {"dz": dz}
        for k in (1, 10):
            lost, vt = components.obtain_main_components(dz.clone(), k=k)
            case[f"lost_k{k}"], case[f"vt_k{k}"] = lost, vt
        out["cases"][name] = case
        print(f"{name}: |lost_k1| {case['lost_k1'].float().norm():.4f} |lost_k10| {case['lost_k10'].float().norm():.4f}")
    torch.save(out, args.out)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
