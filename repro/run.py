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
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro.config import ConfigError, RunConfig, load_run_config, to_plain
from repro import record as rec
from repro.stages import Run, resolve, run_identity  # noqa: F401  (run_identity: re-exported for callers)

log = logging.getLogger("repro")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def preflight(run) -> None:
    """Every check that can fail on user input, before the model is loaded (`run`: a RunConfig or a resolved Run)."""
    from repro.data.calibration import check_calibration
    from repro.data.perplexity import check_source
    from repro.models.loading import check_model_source

    from repro.input_checks import check_text_file

    r = run if isinstance(run, Run) else resolve(run)
    cfg = r.cfg
    seqlen = cfg.model.seqlen or _known_context(cfg.model)
    check_model_source(cfg.model)
    if r.needs_calibration:
        if cfg.calib.name == "none":
            raise ConfigError("calib", "none", "a calibration set (c4, wikitext2, local_text)",
                              f"score={cfg.score.name} allocation={cfg.allocation.name} needs calibration data.")
        check_calibration(cfg.calib)
        _check_calibration_context(cfg)
        check_text_file("calib.local_path", cfg.calib.local_path, (cfg.calib.seqlen or seqlen or 0) + 1)
    if r.prunes and cfg.pattern.name == "structured" and not getattr(r.scorer, "structured", False):
        raise ConfigError("pattern", "structured", "unstructured, 2:4 or 4:8 for "
                          f"score={cfg.score.name}", "pattern=structured needs a structured score: slimgpt")
    if r.prunes and cfg.pattern.name != "structured" and getattr(r.scorer, "structured", False):
        raise ConfigError("pattern", cfg.pattern.label, "structured",
                          f"score={cfg.score.name} removes whole heads and channels")
    for method in (r.scorer, r.allocator):     # each method's own rules (e.g. SparseGPT's blocksize): classmethods
        check = getattr(method, "check", None)
        if check is not None:
            check(cfg)
    from repro.registry import build
    recovery_check = getattr(build("recovery", cfg.recovery), "check", None)   # repro/recovery/base.py: Recovery.check
    if recovery_check is not None:
        recovery_check(cfg)
    for name in cfg.eval.ppl.datasets:
        check_source(name, getattr(cfg.data, name))
        check_text_file(f"data.{name}.local_path", getattr(cfg.data, name).local_path, seqlen)
    if cfg.objectives is not None:
        from repro.methods.mosp_grid import check_objectives
        check_objectives(cfg)
    if cfg.eval.zeroshot:
        from repro.eval.zeroshot import check_zeroshot
        check_zeroshot(cfg.eval.zeroshot)
    if cfg.eval.speed:
        from repro.eval.speed import check_speed
        check_speed(cfg.eval.speed, cfg)


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
    run = resolve(cfg)
    preflight(run)
    out_dir = run.run_dir()
    if rec.identity_locked(out_dir):
        log.info("waiting: another process is running %s", out_dir)
    with rec.identity_lock(out_dir):   # concurrent sweeps sharing this run compute it once (repro/runner)
        return _execute_locked(run, out_dir)


def _execute_locked(run: Run, out_dir: Path) -> dict:
    try:
        existing = rec.read_record(out_dir)
    except (OSError, ValueError) as e:    # half-written / corrupt record: recompute it (no force needed)
        log.warning("corrupt record %s (%s): recomputing", out_dir / rec.RECORD_FILE, str(e).splitlines()[0])
        existing = None
    if existing and existing.get("status") == "ok" and not run.cfg.force:
        log.info("skip %s: an ok record exists (force=true reruns it)", out_dir)
        existing["skipped"] = True
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    record = rec.skeleton(run, "running")
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(record["config"])))
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
            record["finished_at"] = rec.now()
            record["memory"] = rec.peak_memory()
            rec.write_json_atomic(out_dir / rec.RECORD_FILE, record)
            _mirror(run.cfg, record)
    return record


def _run_steps(run: Run, record: dict, out_dir: Path) -> None:
    """load → calibrate → prune → recover → evaluate; each step fills its part of `record`."""
    from repro.run_steps import calibrate, evaluate, load, prune, recover

    _seed_everything(run.cfg.seed)
    model, tokenizer, adapter, seqlen = load(run, record)
    if run.cfg.objectives is not None:     # MOSP / Extension 1: a model per preference (repro/methods/mosp_grid.py)
        from repro.methods.mosp_grid import run_preference_grid
        return run_preference_grid(run, record, model, tokenizer, adapter, seqlen, out_dir)
    calib = calibrate(run, record, tokenizer, seqlen)
    prune(run, record, model, tokenizer, adapter, calib)
    recover(run, record, model, tokenizer, adapter, calib)
    evaluate(run, record, model, tokenizer, seqlen)


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
    from repro.registry import method_class

    if method_class("score", cfg["score"]["name"]).prunes:
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
    try:
        dense = rec.read_record(rec.run_dir(run.paths.results, run_identity(dense_counterpart(run))))
    except (OSError, ValueError):
        dense = None
    print(summary_line(record, dense), flush=True)


OPTIONAL_GROUPS = ("experiment", "env", "logger")     # `optional` in conf/config.yaml: Hydra ignores a typo there


def check_optional_groups(argv) -> None:
    """A choice of an optional config group must exist (Hydra would silently run without it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # noqa: BLE001 — Hydra itself reports malformed overrides
        return
    for o in overrides:
        group = o.key_or_group.lstrip("+~")
        if group not in OPTIONAL_GROUPS or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        root = Path(CONF_DIR) / group
        for v in values:
            if v not in ("null", "None") and not (root / f"{v}.yaml").is_file():
                valid = sorted(str(p.relative_to(root))[:-5] for p in root.rglob("*.yaml"))
                raise ConfigError(group, v, "one of " + ", ".join(valid))


def hydra_main() -> None:
    import hydra

    try:
        check_optional_groups(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(main_entry)()


if __name__ == "__main__":
    hydra_main()
