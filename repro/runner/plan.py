"""Plan a sweep before anything runs: compose each job's config exactly as Hydra will run it, validate it, compute
its run identity, and decide what to do with it.

    run        no `ok` record for the identity (or `force=true`)
    skip       an `ok` record exists: resume = relaunch the same command, only what is missing runs
    duplicate  an earlier job of this sweep has the same identity (e.g. `score=dense` × several sparsities —
               a dense run ignores the sparsity): it is computed once and its result reused

Every check that can fail on user input runs here, for every job, before the first job starts: a typo in one
grid point stops the whole sweep with a `ConfigError` instead of failing job 37 after an hour. The plan is
written as `<sweep dir>/repro_sweep.json` (the grid `repro status <sweep dir>` reads).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, open_dict

from repro import record as rec
from repro.runner.status import MANIFEST, key_metric, record_status, render_table

log = logging.getLogger("repro.runner")


@dataclass
class PlannedJob:
    index: int                     # position in the launcher's batch
    num: int                       # hydra.job.num
    overrides: list
    identity: str
    results: str                   # paths.results of the job
    gpus: int                      # resources.gpus, else model.gpus: GPUs the job leases
    job_dir: str                   # <hydra.sweep.dir>/<hydra.sweep.subdir>: launcher log, Hydra's .hydra/
    action: str                    # run | skip | duplicate
    status: str                    # ok | failed | running | missing (at planning time)
    duplicate_of: Optional[int] = None
    sweep_config: Any = field(default=None, repr=False)   # the composed DictConfig (with its hydra node)
    run: Any = field(default=None, repr=False)            # the validated RunConfig

    @property
    def run_dir(self) -> Path:
        return rec.run_dir(self.results, self.identity)

    @property
    def label(self) -> str:
        return f"#{self.num} " + (" ".join(self.overrides) or "(no overrides)")

    def manifest_entry(self) -> dict:
        return {"num": self.num, "overrides": list(self.overrides), "identity": self.identity,
                "results": self.results, "run_dir": str(self.run_dir), "gpus": self.gpus, "job_dir": self.job_dir,
                "action": self.action, "duplicate_of": self.duplicate_of}


def importable(task_function):
    """`python -m repro.run` makes the task function `__main__.main_entry`, which cloudpickle would ship by value;
    ship the same function by reference to its module instead (`repro.run.main_entry`, preloaded in the jobs)."""
    import importlib
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(task_function, "__module__", None) == "__main__" and spec is not None and spec.name:
        try:
            return getattr(importlib.import_module(spec.name), task_function.__name__)
        except (ImportError, AttributeError):
            pass
    return task_function


def compose_job(hydra_context, master_config: DictConfig, overrides: Sequence[str], num: int) -> DictConfig:
    """The job's config exactly as Hydra's own launchers build it (load_sweep_config + job id/num)."""
    from hydra.core.hydra_config import HydraConfig

    sweep_config = hydra_context.config_loader.load_sweep_config(master_config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{num}"
        sweep_config.hydra.job.num = num
    HydraConfig.instance().set_config(sweep_config)   # so ${hydra:...} in the sweep subdir resolves
    return sweep_config


def plan_jobs(hydra_context, master_config: DictConfig, job_overrides: Sequence[Sequence[str]],
              initial_job_idx: int, progress: bool = True) -> list[PlannedJob]:
    """Compose, validate and classify every job. Raises ConfigError (naming the job) before anything runs."""
    from hydra.core.hydra_config import HydraConfig

    saved_hydra_cfg = HydraConfig.instance().cfg
    try:
        return _plan(hydra_context, master_config, job_overrides, initial_job_idx, progress)
    finally:
        HydraConfig.instance().cfg = saved_hydra_cfg       # compose_job set it to each job's config in turn


def _plan(hydra_context, master_config, job_overrides, initial_job_idx, progress) -> list[PlannedJob]:
    from tqdm import tqdm

    from repro.config import ConfigError, load_run_config
    from repro.run import preflight
    from repro.stages import resolve

    jobs: list[PlannedJob] = []
    first_of: dict[str, int] = {}
    for index, overrides in enumerate(tqdm(job_overrides, desc="planning", unit="job", disable=not progress,
                                           leave=False)):
        num = initial_job_idx + index
        sweep_config = compose_job(hydra_context, master_config, overrides, num)
        try:
            resolved = resolve(load_run_config(sweep_config))
            preflight(resolved)
            run = resolved.cfg
        except ConfigError as e:
            raise ConfigError(e.field_name, e.value, "a valid value",
                              f"(job #{num}: {' '.join(overrides)}) {e}") from None
        identity = resolved.identity
        job_dir = str(Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir))
        status, _ = record_status(run.paths.results, identity)
        if identity in first_of:
            action, dup = "duplicate", first_of[identity]
        else:
            first_of[identity] = index
            action, dup = ("skip" if status == "ok" and not run.force else "run"), None
        jobs.append(PlannedJob(index=index, num=num, overrides=list(overrides), identity=identity,
                               results=run.paths.results, gpus=run.resources.gpus or run.model.gpus,
                               job_dir=job_dir, action=action,
                               status=status, duplicate_of=dup, sweep_config=sweep_config, run=run))
    return jobs


def write_manifest(sweep_dir: Path, jobs: list[PlannedJob], launcher: str, plan_s: float | None = None) -> Path:
    """`<sweep dir>/repro_sweep.json`: the grid of this launch (appended to by relaunches into the same dir)."""
    path = Path(sweep_dir) / MANIFEST
    previous = rec.read_record(path) or {}
    known = {(j["num"], j["identity"]) for j in previous.get("jobs", [])}
    entries = list(previous.get("jobs", [])) + [j.manifest_entry() for j in jobs if (j.num, j.identity) not in known]
    try:
        rec.write_json_atomic(path, {"launcher": launcher, "updated_at": datetime.now(timezone.utc).isoformat(),
                                     "plan_s": plan_s, "jobs": entries})
    except OSError as e:      # read-only or full disk: one line (Hydra would print a traceback for an exception)
        raise SystemExit(f"repro: cannot write the sweep manifest {path}: {e.strerror or e} "
                         "(free space, or point hydra.sweep.dir / TMPDIR at a writable folder)") from None
    return path


def plan_table(jobs: list[PlannedJob]) -> str:
    rows = []
    for job in jobs:
        status, record = record_status(job.results, job.identity)
        will = {"run": "will run", "skip": "skip (ok)", "duplicate": f"= job #{jobs[job.duplicate_of].num}"
                if job.duplicate_of is not None else "duplicate"}[job.action]
        rows.append({"num": job.num, "status": status, "metric": key_metric(record) or will,
                     "overrides": " ".join(job.overrides), "run_dir": str(job.run_dir)})
    return render_table(rows)


def log_plan_summary(jobs: list[PlannedJob]) -> None:
    n = {a: sum(j.action == a for j in jobs) for a in ("run", "skip", "duplicate")}
    log.info("sweep of %d jobs: %d to run, %d skipped (ok record exists), %d duplicates of another job",
             len(jobs), n["run"], n["skip"], n["duplicate"])
