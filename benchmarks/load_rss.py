"""Resident memory of loading SmolLM2 before any pruning, to split a peak-RSS difference into loader and pruning
(benchmarks/RESULTS.md, "Quiet machine, 2026-12-06", memory).

    python benchmarks/load_rss.py hf        # from_pretrained of the saved directory vs_reference.py prunes
    /work/wt/golden-ref-venv/bin/python benchmarks/load_rss.py hf      # the same under the reference's pinned venv
    python benchmarks/load_rss.py repro     # the project's own path: Hydra composition + repro.models.load_model

Prints one JSON line: VmRSS (MiB) after importing torch + transformers, after the side's own imports/composition,
and after loading (read from /proc/self/status, Linux).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAVED = Path.home() / ".cache" / "repro" / "vs_reference" / "smollm2-32x512" / "model"   # vs_reference.py _prepare


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(side: str) -> None:
    import torch
    import transformers

    out = {"side": side, "transformers": transformers.__version__, "torch_transformers_mib": round(rss_mib())}
    if side == "hf":
        out["imports_mib"] = round(rss_mib())
        transformers.AutoModelForCausalLM.from_pretrained(str(SAVED), torch_dtype=torch.float32)
    else:
        sys.path.insert(0, str(ROOT))
        from repro.models.loading import load_model
        from tests.conftest import compose_run

        run = compose_run("env=offline", "model=smollm2-135m")
        out["imports_mib"] = round(rss_mib())
        load_model(run.model)
    out["loaded_mib"] = round(rss_mib())
    out["load_increment_mib"] = out["loaded_mib"] - out["imports_mib"]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hf")
