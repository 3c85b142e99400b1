"""Optional mirrors of a run record — wandb today. The record (`result.json`) is the source of truth; a mirror
is a convenience for browsing, never required: `repro.run._mirror` calls `mirror_record` after the record is
written and only logs a warning if it fails.

    python -m repro.run logger=wandb                              # offline: results/wandb/offline-run-*
    python -m repro.run logger=wandb logger.mode=online           # then `wandb sync` is not needed
    wandb sync results/wandb/offline-run-*                        # upload offline runs later

`conf/logger/wandb.yaml`: mode (offline by default), project (default: `repro-<experiment.paper>`, or `repro`),
group (default: `<paper>/<table>`, or the model name), entity, tags, dir (default: `<paths.results>`; wandb
adds `wandb/`).
The wandb run is named after the identity; its config is the resolved run config plus the identity, its summary
the flattened metrics (`ppl/wikitext2`, `zeroshot/mean`), overall sparsity, status and timings. A failed run is
mirrored too (status and error type).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

log = logging.getLogger("repro")
WANDB_MODES = ("offline", "online", "disabled")


def _plain(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    if cfg is None:
        return {}
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def scalar_leaves(tree: dict, prefix: str = "", sep: str = "/") -> dict:
    """{'ppl': {'wikitext2': 36.5}} -> {'ppl/wikitext2': 36.5}; only numbers, strings and booleans are kept."""
    from repro.record import flatten as leaves

    return {k: v for k, v in leaves(tree or {}, prefix, sep).items()
            if isinstance(v, (int, float, str, bool)) and k}


def wandb_names(logger_cfg: dict, record: dict) -> tuple[str, Optional[str]]:
    """(project, group) — explicit settings win; otherwise derived from the experiment (paper/table)."""
    config = record.get("config") or {}
    experiment = config.get("experiment") or {}
    paper, table = experiment.get("paper"), experiment.get("table")
    project = logger_cfg.get("project") or (f"repro-{paper}" if paper else "repro")
    group = logger_cfg.get("group") or ("/".join(p for p in (paper, table) if p) if paper
                                        else (config.get("model") or {}).get("name"))
    return project, group


def summary_of(record: dict) -> dict:
    summary = {"status": record.get("status"), "identity": record.get("identity")}
    summary.update(scalar_leaves(record.get("metrics") or {}))
    overall = (record.get("sparsity") or {}).get("overall")
    if overall is not None:
        summary["sparsity/overall"] = overall
    summary.update(scalar_leaves(record.get("timings") or {}, "timings"))
    if record.get("status") == "failed":
        summary["error/type"] = (record.get("error") or {}).get("type")
    return summary


def mirror_record(logger_cfg: Any, record: dict) -> Optional[str]:
    """Mirror one record to the configured logger. Returns the local wandb run directory (or None)."""
    cfg = _plain(logger_cfg)
    name = cfg.get("name", "wandb")
    if name != "wandb":
        raise ValueError(f"logger.name={name!r}: the only mirror is 'wandb'")
    mode = cfg.get("mode") or "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.mode={mode!r}: expected one of {', '.join(WANDB_MODES)}")
    import wandb

    project, group = wandb_names(cfg, record)
    results = ((record.get("config") or {}).get("paths") or {}).get("results") or "results"
    directory = cfg.get("dir") or results          # wandb writes <dir>/wandb/offline-run-*
    os.makedirs(directory, exist_ok=True)
    config = dict(record.get("config") or {})
    config["identity"] = record.get("identity")
    run = wandb.init(project=project, group=group, entity=cfg.get("entity"), name=record.get("identity"),
                     tags=list(cfg.get("tags") or []), config=config, dir=directory, mode=mode,
                     job_type=(config.get("score") or {}).get("name"), reinit="finish_previous")
    try:
        run.summary.update(summary_of(record))
        per_layer = (record.get("sparsity") or {}).get("per_layer") or {}
        if per_layer and cfg.get("log_per_layer", True):
            table = wandb.Table(columns=["layer", "sparsity"], data=[[k, v] for k, v in per_layer.items()])
            run.log({"sparsity/per_layer": table})
        return getattr(run, "dir", None)
    finally:
        run.finish()
