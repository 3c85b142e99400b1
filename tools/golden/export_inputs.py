"""Step 1 of tools/golden/make_fixtures.sh (runs in the PROJECT's environment).

Builds each golden model with the project's own loader (so the tests can rebuild the identical dense weights),
saves it as an HF directory that the reference environment (transformers 4.46) can load, and writes the
calibration / evaluation token ids both sides will use.

    python tools/golden/export_inputs.py WORKDIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.test_golden import MODELS, build_model, golden_tokens, weights_digest  # noqa: E402


def legacy_config(model_dir: Path) -> None:
    """transformers 5 writes `rope_parameters` and `dtype`; 4.46 reads `rope_theta` and `torch_dtype` and would
    silently fall back to rope_theta=10000. Write the old keys too (the dense perplexity check catches misses)."""
    path = model_dir / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        raise SystemExit(f"{model_dir}: rope_type {rope['rope_type']} not handled by the golden export")
    cfg["torch_dtype"] = cfg.get("dtype", "float32")
    path.write_text(json.dumps(cfg, indent=1))


def main(workdir: str) -> None:
    work = Path(workdir)
    torch.set_num_threads(1)
    for name, spec in MODELS.items():
        model, _ = build_model(spec)
        out = work / name
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out / "model"), safe_serialization=True)
        legacy_config(out / "model")
        calib, evals = golden_tokens(spec)
        np.savez(out / "tokens.npz", calib=calib.numpy(), eval=evals.numpy())
        meta = {"model": name, "spec": spec, "weights_sha256": weights_digest(model),
                "rope_theta": float(getattr(model.config, "rope_theta", None)
                                    or (getattr(model.config, "rope_parameters", None) or {}).get("rope_theta", 0)
                                    or 0) or None,
                "num_hidden_layers": model.config.num_hidden_layers}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
        print(f"exported {name}: {meta['weights_sha256'][:12]}")


if __name__ == "__main__":
    main(sys.argv[1])
