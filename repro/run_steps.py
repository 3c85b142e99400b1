"""The steps of one run (repro/run.py calls them in order): load → calibrate → prune → recover → evaluate.

Each step takes the resolved run (repro/stages.py) and fills its part of the record. The prune step reuses the
stored pruned model of the run's prune id when one verifies (repro/store.py) and stores it otherwise; calibration
data is loaded only when a step needs it (a reused prune without a calibrating recovery needs none).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import time

log = logging.getLogger("repro")


class LazyCalibration:
    """The calibration set, tokenized on first use (`get()`), its fingerprint recorded in `record.protocol`."""

    def __init__(self, run, record, tokenizer, seqlen):
        self.run, self.record, self.tokenizer, self.seqlen, self._data = run, record, tokenizer, seqlen, None

    def get(self):
        from repro.data.calibration import load_calibration

        if self._data is None:
            cfg = self.run.cfg
            t = time.perf_counter()
            self._data = load_calibration(cfg.calib, self.tokenizer, cfg.calib.seqlen or self.seqlen)
            self.record["timings"]["calibration_data_s"] = time.perf_counter() - t
            self.record["protocol"]["calibration"] = self._data.fingerprint
        return self._data

    def ids(self):
        return self.get().input_ids


def load(run, record):
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model, model_seqlen

    cfg = run.cfg
    t = time.perf_counter()
    model, tokenizer = load_model(cfg.model, seed=cfg.seed)
    adapter = adapter_for(model)
    seqlen = model_seqlen(model, cfg.model)
    record["timings"]["load_s"] = time.perf_counter() - t
    record["protocol"].update(dtype=cfg.model.dtype, seqlen=seqlen, model_class=type(model).__name__)
    return model, tokenizer, adapter, seqlen


def calibrate(run, record, tokenizer, seqlen):
    return LazyCalibration(run, record, tokenizer, seqlen) if run.needs_calibration else None


def prune(run, record, model, tokenizer, adapter, calib) -> None:
    from repro import store
    from repro.prune.pipeline import measure_sparsity, prune_model

    cfg = run.cfg
    if cfg.eval.speed and run.prunes:      # the dense baseline always runs the dense kernel (not 2:4 yet)
        from repro.eval.speed import evaluate_speed
        record["metrics"]["speed_dense"], record["protocol"]["speed_dense"] = evaluate_speed(
            model, tokenizer, dataclasses.replace(cfg.eval.speed, kernel="dense"))
    t = time.perf_counter()
    if not run.prune_stage:                # dense, or a recovery that prunes during its own rounds (LoSA)
        record["prune"] = prune_model(model, adapter, cfg, None) if not run.prunes else {
            "score": cfg.score.name, "allocation": cfg.allocation.name, "pattern": cfg.pattern.label,
            "pruned_by": "recovery"}
    else:
        path = run.pruned_dir()
        with store.prune_lock(path):           # two jobs of the same prune build it once
            manifest = None if cfg.force else store.load(model, adapter, path)     # force=true re-prunes too
            reused = manifest is not None
            if not reused:
                changed: set = set()
                report = prune_model(model, adapter, cfg, calib.ids() if calib is not None else None, changed,
                                     run.run_dir())
                report["calibration"] = record["protocol"].get("calibration")
                manifest = store.save(model, adapter, path, report, changed)
            elif manifest["report"].get("calibration") is not None:
                record["protocol"]["calibration"] = manifest["report"]["calibration"]
        record["prune"] = {k: v for k, v in manifest["report"].items() if k != "calibration"}
        record["pruned_model"] = {"prune_id": run.prune_id, "path": str(path), "reused": reused,
                                  "updated_weights": len(manifest["updated_weights"]),
                                  "built_by": manifest.get("built_by")}     # the commit whose code pruned
        log.info("%s pruned model %s", "reused" if reused else "stored", path)
    record["timings"]["prune_s"] = time.perf_counter() - t
    record["sparsity"] = measure_sparsity(model, adapter)
    log.info("measured sparsity %.4f", record["sparsity"]["overall"])


def recover(run, record, model, tokenizer, adapter, calib) -> None:
    from repro.prune.pipeline import measure_sparsity
    from repro.registry import build

    if not run.recovers:
        return
    workdir = run.recovered_dir()
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    method = build("recovery", run.cfg.recovery)
    slim = run.fields.get("recovery_model") == "slim"          # repro.stages.slims_before_recovery
    if slim:
        record["recovery_model"] = slim_for_recovery(model, adapter)
    data = calib.get() if calib is not None else None
    takes_workdir = len(inspect.signature(method.recover).parameters) >= 5    # (model, tokenizer, run, calib, workdir)
    args = (model, tokenizer, run.cfg, data) + ((workdir,) if takes_workdir else ())
    record["recovery"] = method.recover(*args)
    record["timings"]["recovery_s"] = time.perf_counter() - t
    record["sparsity_after_recovery"] = measure_sparsity(model, adapter)
    if slim:                               # zeros left in the smaller model + what the cut removed, over the dense size
        before = record["recovery_model"]["block_linear_params_before"]
        after = record["recovery_model"]["block_linear_params_after"]
        zeros = record["sparsity_after_recovery"]["overall"] * after
        record["sparsity_after_recovery"] = {"overall": (before - after + zeros) / before, "slim_model": True,
                                             "zero_fraction_of_slim_model": zeros / after}
    if run.prunes_itself:                  # LoSA: the model is pruned only now
        record["sparsity"] = record["sparsity_after_recovery"]


def slim_for_recovery(model, adapter) -> dict:
    """Cut a structured prune's zeroed heads and channels (repro/prune/structured.py `slim_model`); the record
    gets the parameter counts before and after and the per-layer shapes."""
    from repro.prune.structured import count_params, slim_model

    before = count_params(model, adapter)
    shapes = slim_model(model, adapter)
    after = count_params(model, adapter)
    log.info("structured prune cut to its smaller model before recovery: %d -> %d block-linear parameters",
             before["block_linears"], after["block_linears"])
    return {"form": "slim", "params_before": before["total"], "params_after": after["total"],
            "block_linear_params_before": before["block_linears"],
            "block_linear_params_after": after["block_linears"], **shapes}


def evaluate(run, record, model, tokenizer, seqlen) -> None:
    from repro.eval import evaluate_all

    t = time.perf_counter()
    metrics, protocol = evaluate_all(model, tokenizer, run.cfg, seqlen)
    record["timings"]["eval_s"] = time.perf_counter() - t
    record["metrics"].update(metrics)
    record["protocol"].update(protocol)
    if "speed" in metrics and "speed_dense" in record["metrics"]:
        from repro.eval.speed import speedups
        record["metrics"]["speed"].update(speedups(record["metrics"]["speed_dense"], metrics["speed"]))
