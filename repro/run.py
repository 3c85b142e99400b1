"""Run one experiment: config → load model → (calibration) → prune → (recover) → evaluate → record.

    python -m repro.run                                   # SmolLM2-135M, magnitude 50%, bundled WikiText-2 slice
    python -m repro.run score=wanda calib=local_text      # Wanda, offline calibration text
    python -m repro.run -m score=magnitude,wanda sparsity=0.5,0.7
    repro run experiment=neuronal/table2 model=llama2-7b  # a paper table (see conf/experiment/)

A run is a pure function of its resolved config; its record lands in `results/runs/<identity>/result.json`
(schema: docs/record.md). A run whose identity already has an `ok` record is skipped unless `force=true`.
"""
from __future__ import annotations

import logging
import random
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro.config import ConfigError, RunConfig, load_run_config, to_plain
from repro import record as rec

log = logging.getLogger("repro")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def preflight(run: RunConfig) -> None:
    """Every check that can fail on user input, before the model is loaded."""
    from repro.data.calibration import check_calibration
    from repro.data.perplexity import check_source
    from repro.models.loading import check_model_source
    from repro.prune.pipeline import needs_calibration

    check_model_source(run.model)
    if needs_calibration(run):
        if run.calib.name == "none":
            raise ConfigError("calib", "none", "a calibration set (c4, wikitext2, local_text)",
                              f"score={run.score.name} allocation={run.allocation.name} needs calibration data.")
        check_calibration(run.calib)
        _check_calibration_context(run)
    if run.score.name == "sparsegpt" and run.pattern.name == "nm" and run.score.blocksize % run.pattern.m:
        raise ConfigError("score.blocksize", run.score.blocksize,
                          f"a multiple of M = {run.pattern.m} for the {run.pattern.label} pattern")
    for name in run.eval.ppl.datasets:
        check_source(name, getattr(run.data, name))
    if run.eval.zeroshot:
        from repro.eval.zeroshot import check_zeroshot
        check_zeroshot(run.eval.zeroshot)
    if run.eval.speed:
        from repro.eval.speed import check_speed
        check_speed(run.eval.speed, run)
    from repro.registry import build
    build("recovery", run.recovery).check(run)      # repro/recovery/base.py: Recovery.check


def _known_context(model_cfg) -> int | None:
    """max_position_embeddings when it is known without loading weights (random config, local config.json)."""
    import json

    if model_cfg.random_init is not None:
        return model_cfg.random_init.get("max_position_embeddings")
    config_json = Path(model_cfg.path).expanduser() / "config.json"
    if config_json.is_file():
        return json.loads(config_json.read_text()).get("max_position_embeddings")
    return None


def _check_calibration_context(run: RunConfig) -> None:
    context = _known_context(run.model)
    seqlen = run.calib.seqlen or run.model.seqlen
    if context is not None and seqlen is not None and seqlen > context:
        field = "calib.seqlen" if run.calib.seqlen else "model.seqlen"
        raise ConfigError(field, seqlen, f"at most the model's context (max_position_embeddings = {context})")


def run_identity(run: RunConfig) -> str:
    from repro.prune.pipeline import needs_calibration

    return rec.identity(to_plain(run), dense=run.score.name == "dense", needs_calib=needs_calibration(run))


@contextmanager
def _log_to(path: Path):
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def execute(cfg: DictConfig | dict | RunConfig) -> dict:
    """Validate, run (or skip) and record one experiment. Returns the record."""
    run = cfg if isinstance(cfg, RunConfig) else load_run_config(cfg)
    preflight(run)
    ident = run_identity(run)
    out_dir = rec.run_dir(run.paths.results, ident)
    if rec.identity_locked(out_dir):
        log.info("waiting: another process is running %s", out_dir)
    with rec.identity_lock(out_dir):   # concurrent sweeps sharing this run compute it once (repro/runner)
        return _execute_locked(run, ident, out_dir)


def _execute_locked(run: RunConfig, ident: str, out_dir: Path) -> dict:
    existing = rec.read_record(out_dir)
    if existing and existing.get("status") == "ok" and not run.force:
        log.info("skip %s: an ok record exists (force=true reruns it)", out_dir)
        existing["skipped"] = True
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = to_plain(run)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    record = {"schema_version": rec.SCHEMA_VERSION, "identity": ident, "status": "running",
              "run_dir": str(out_dir), "config": plain, "identity_fields": rec.identity_fields(
                  plain, dense=run.score.name == "dense", needs_calib=_needs_calib(run)),
              "started_at": _now(), "versions": rec.versions(), "metrics": {}, "protocol": {}, "timings": {}}
    t_start = time.perf_counter()
    with _log_to(out_dir / "run.log"):
        try:
            _run_steps(run, record, out_dir)
            record["status"] = "ok"
        except BaseException as e:  # noqa: BLE001 — a failed run is recorded, then re-raised
            record["status"] = "failed"
            record["error"] = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()}
            raise
        finally:
            record["timings"]["total_s"] = time.perf_counter() - t_start
            record["finished_at"] = _now()
            record["memory"] = rec.peak_memory()
            rec.write_json_atomic(out_dir / rec.RECORD_FILE, record)
            _mirror(run, record)
    return record


def _needs_calib(run) -> bool:
    from repro.prune.pipeline import needs_calibration

    return needs_calibration(run)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _run_steps(run: RunConfig, record: dict, out_dir: Path) -> None:
    from repro.data.calibration import load_calibration
    from repro.eval import evaluate_all
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model, model_seqlen
    from repro.prune.pipeline import measure_sparsity, needs_calibration, prune_model
    from repro.registry import build

    timings = record["timings"]
    _seed_everything(run.seed)
    t = time.perf_counter()
    model, tokenizer = load_model(run.model, seed=run.seed)
    adapter = adapter_for(model)
    seqlen = model_seqlen(model, run.model)
    timings["load_s"] = time.perf_counter() - t
    record["protocol"].update(dtype=run.model.dtype, seqlen=seqlen, model_class=type(model).__name__)

    calib = None
    if run.score.name != "dense" and needs_calibration(run):
        t = time.perf_counter()
        calib = load_calibration(run.calib, tokenizer, run.calib.seqlen or seqlen)
        timings["calibration_data_s"] = time.perf_counter() - t
        record["protocol"]["calibration"] = calib.fingerprint

    if run.eval.speed and run.score.name != "dense":
        from repro.eval.speed import evaluate_speed
        import dataclasses  # the dense baseline always runs the dense kernel (the model is not 2:4 yet)
        record["metrics"]["speed_dense"], record["protocol"]["speed_dense"] = evaluate_speed(
            model, tokenizer, dataclasses.replace(run.eval.speed, kernel="dense"))

    recovery = build("recovery", run.recovery)
    if not recovery.prunes_itself:      # LoSA prunes inside its own rounds (repro/recovery/base.py)
        t = time.perf_counter()
        record["prune"] = prune_model(model, adapter, run, calib.input_ids if calib is not None else None)
        timings["prune_s"] = time.perf_counter() - t
        record["sparsity"] = measure_sparsity(model, adapter)
        log.info("measured sparsity %.4f", record["sparsity"]["overall"])

    if run.recovery.name != "none":
        t = time.perf_counter()
        record["recovery"] = recovery.recover(model, tokenizer, run, calib, out_dir / "recovery")
        timings["recovery_s"] = time.perf_counter() - t
        record["sparsity_after_recovery"] = measure_sparsity(model, adapter)
        if recovery.prunes_itself:
            record["sparsity"] = record["sparsity_after_recovery"]

    t = time.perf_counter()
    metrics, protocol = evaluate_all(model, tokenizer, run, seqlen)
    timings["eval_s"] = time.perf_counter() - t
    record["metrics"].update(metrics)
    record["protocol"].update(protocol)
    if "speed" in metrics and "speed_dense" in record["metrics"]:
        from repro.eval.speed import speedups
        record["metrics"]["speed"].update(speedups(record["metrics"]["speed_dense"], metrics["speed"]))


def _mirror(run: RunConfig, record: dict) -> None:
    """Optional mirrors of the record (wandb); never allowed to fail the run."""
    if not run.logger:
        return
    try:
        from repro.logging_mirror import mirror_record
        mirror_record(run.logger, record)
    except Exception as e:  # noqa: BLE001
        log.warning("logger mirror failed (the record is safe): %s", e)


def summary_line(record: dict, dense: dict | None = None) -> str:
    cfg = record["config"]
    ppl = record.get("metrics", {}).get("ppl", {})
    parts = [f"{cfg['model']['name']} {cfg['score']['name']}"]
    if cfg["score"]["name"] != "dense":
        parts.append(f"{cfg['allocation']['name']} {cfg['sparsity']:.0%} {cfg['pattern']['name']}")
    for ds, v in ppl.items():
        s = f"{ds} ppl {v:.3f}"
        dv = (dense or {}).get("metrics", {}).get("ppl", {}).get(ds)
        if dv and dense is not record:
            s += f" (dense {dv:.3f}, x{v / dv:.2f})"
        parts.append(s)
    zs = record.get("metrics", {}).get("zeroshot", {})
    if "mean" in zs:
        parts.append(f"zero-shot mean {zs['mean']:.4f} ({len(zs) - 1} tasks)")
    sp = record.get("metrics", {}).get("speed", {})
    if "decode_tok_s" in sp:
        parts.append(f"decode {sp['decode_tok_s']:.1f} tok/s")
    if "sparsity" in record:
        parts.append(f"sparsity {record['sparsity']['overall']:.4f}")
    return " | ".join(parts) + f" -> {record['run_dir']}"


def dense_counterpart(run: RunConfig) -> RunConfig:
    import copy

    from repro.registry import validate_method_node

    d = copy.deepcopy(run)
    d.score = validate_method_node("score", {"name": "dense"})
    d.allocation = validate_method_node("allocation", {"name": "uniform"})
    d.recovery = validate_method_node("recovery", {"name": "none"})
    d.eval.speed = None
    return d


def main_entry(cfg: DictConfig) -> None:
    try:
        run = load_run_config(cfg)
        record = execute(run)
    except ConfigError as e:
        log.error("%s", e)
        sys.exit(2)
    dense = rec.read_record(rec.run_dir(run.paths.results, run_identity(dense_counterpart(run))))
    print(summary_line(record, dense), flush=True)


def hydra_main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(main_entry)()


if __name__ == "__main__":
    hydra_main()
