"""Peak RSS of the prune step alone (model and calibration already in memory), CPU.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/prune_peak_rss.py score=sparsegpt sparsity=0.5   # run overrides

Loads the model and the calibration windows as `repro run` does (env=offline, SmolLM2 by default), resets the
kernel's peak-RSS counter (`/proc/self/clear_refs` 5, Linux), runs `prune_model` (the engine, the scorer, the
store's bookkeeping of changed linears) and prints RSS before, peak during (VmHWM) and the difference, in MiB.
"""
from __future__ import annotations

import json
import sys
import time


def _status(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def main(argv) -> None:
    import torch

    from repro.data.calibration import load_calibration
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model, model_seqlen
    from repro.prune.pipeline import prune_model
    from hydra import compose, initialize_config_dir

    from repro.config import load_run_config
    from repro.run import CONF_DIR

    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        run = load_run_config(compose("config", overrides=["model=smollm2-135m", "env=offline", *argv]))
    model, tokenizer = load_model(run.model, seed=run.seed)
    adapter = adapter_for(model)
    seqlen = model_seqlen(model, run.model)
    ids = load_calibration(run.calib, tokenizer, run.calib.seqlen or seqlen).input_ids
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, anon, file_ = _status("VmRSS"), _status("RssAnon"), _status("RssFile")
    changed: set = set()
    t = time.perf_counter()
    prune_model(model, adapter, run, ids, changed)
    import repro
    out = {"repro": repro.__file__, "overrides": argv, "rss_before_mib": round(before, 1), "peak_mib": round(_status("VmHWM"), 1),
           "rss_anon_before_after_mib": [round(anon, 1), round(_status("RssAnon"), 1)],
           "rss_file_before_after_mib": [round(file_, 1), round(_status("RssFile"), 1)],
           "changed_linears": len(changed), "prune_s": round(time.perf_counter() - t, 1)}
    out["peak_minus_before_mib"] = round(out["peak_mib"] - before, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
