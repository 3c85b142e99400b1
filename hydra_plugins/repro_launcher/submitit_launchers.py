"""Hydra launcher plugins `slurm` and `slurm_local`: hydra-submitit-launcher with repro's resume semantics.

    python -m repro.run -m hydra/launcher=slurm hydra.launcher.partition=gpu model=llama2-7b,llama2-70b ...

What this adds to hydra-submitit-launcher's SlurmLauncher/LocalLauncher (whose job side, `__call__`, is reused
as is — the same pickled config and Hydra `run_job` on the node):
  * the grid is planned before submitting (repro/runner/plan.py): jobs with an `ok` record are skipped, jobs
    with the same identity are submitted once, every job config is validated — nothing is submitted if one is bad;
  * GPUs per job come from each job's `resources.gpus` (null: `model.gpus`): one SLURM array per distinct GPU
    count, each with `gpus_per_node` set (unless `hydra.launcher.gpus_per_node` is set explicitly); a job asking for more than
    `max_gpus_per_node` fails before submission; `partition` is checked against `sinfo` when sinfo exists;
  * a failed array element (exception, time limit, preemption, OOM kill) does not stop the collection of the
    others: each gets a failed record with the tail of its SLURM stderr (repro/runner/failures.py);
  * dry_run (the grid and its statuses) and a progress bar while waiting.
Stock hydra-submitit-launcher returns `[j.results()[0] for j in jobs]`, which raises at the first failed job.

`slurm_local` runs the same logic with submitit's LocalExecutor — for tests and for a box without SLURM. Beware:
the LocalExecutor starts every array element at once and gives each CUDA_VISIBLE_DEVICES=0..gpus-1 (hydra#2757);
on a multi-GPU box use hydra/launcher=gpu_pool.
"""
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger("repro.runner")
VANISH_GRACE_S = 10.0                   # a job younger than this is never declared gone from the queue
EXTRA_KEYS = ("max_gpus_per_node", "check_partition", "dry_run", "progress", "poll_s")


@dataclass
class ReproQueueExtras:
    max_gpus_per_node: int = 8          # a job whose resources.gpus exceeds it fails before anything is submitted
    check_partition: bool = True        # check `partition` against `sinfo -h -o %P` (when sinfo exists)
    dry_run: bool = False               # print the grid with each job's status; submit nothing
    progress: bool = True
    poll_s: float = 5.0                 # how often job states are polled while waiting


@dataclass
class ReproSlurmConf(SlurmQueueConf, ReproQueueExtras):
    _target_: str = "hydra_plugins.repro_launcher.submitit_launchers.ReproSlurmLauncher"


@dataclass
class ReproSubmititLocalConf(LocalQueueConf, ReproQueueExtras):
    _target_: str = "hydra_plugins.repro_launcher.submitit_launchers.ReproSubmititLocalLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="repro_slurm", node=ReproSlurmConf, provider="repro")
ConfigStore.instance().store(group="hydra/launcher", name="repro_submitit_local", node=ReproSubmititLocalConf,
                             provider="repro")


class _ReproSubmititMixin(BaseSubmititLauncher):
    def __init__(self, **params: Any) -> None:
        self.extras = {k: params.pop(k) for k in EXTRA_KEYS if k in params}
        super().__init__(**params)

    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state) -> JobReturn:
        """The job side (on the node): submitit's own, plus the test-only fault hook (repro/runner/faults.py)."""
        from repro.runner import faults

        faults.install(sweep_overrides)
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def _executor(self, gpus: int):
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                  if k not in ("submitit_folder", "max_num_timeout")}
        if params.get("gpus_per_node") is None:
            params["gpus_per_node"] = gpus
        executor.update_parameters(**params)
        return executor

    def _check(self, jobs) -> None:
        from repro.config import ConfigError

        limit = self.extras.get("max_gpus_per_node", 8)
        for job in jobs:
            if job.action == "run" and job.gpus > limit:
                raise ConfigError("resources.gpus", job.gpus, f"at most hydra.launcher.max_gpus_per_node={limit}",
                                  f"Job {job.label}.")
        partition = self.params.get("partition")
        if self._EXECUTOR == "slurm" and partition and self.extras.get("check_partition", True) \
                and shutil.which("sinfo"):
            out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30).stdout
            known = {p.strip().rstrip("*") for p in out.split()}
            if known and partition not in known:
                raise ConfigError("hydra.launcher.partition", partition, "one of " + ", ".join(sorted(known)))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from repro.runner.plan import importable, log_plan_summary, plan_jobs, plan_table, write_manifest
        from repro.runner.returns import assemble_returns, completed_return, count_failed, final_summary

        assert self.config is not None and self.hydra_context is not None
        self.task_function = importable(self.task_function)   # shipped by reference, not by value
        progress = bool(self.extras.get("progress", True))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = plan_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx, progress)
        self._check(jobs)
        write_manifest(sweep_dir, jobs, f"submitit_{self._EXECUTOR}")
        if self.extras.get("dry_run"):
            if progress:
                print(plan_table(jobs), flush=True)
            return [completed_return(j, j.manifest_entry()) for j in jobs]
        log_plan_summary(jobs)
        submitted = []
        for gpus in sorted({j.gpus for j in jobs if j.action == "run"}):
            group = [j for j in jobs if j.action == "run" and j.gpus == gpus]
            params = [(list(j.overrides), "hydra.sweep.dir", j.num, f"job_id_for_{j.num}", Singleton.get_state())
                      for j in group]
            array = self._executor(gpus).map_array(self, *zip(*params))
            log.info("submitted %d jobs with %d GPU(s) each: %s", len(group), gpus,
                     array[0].job_id.split("_")[0] if array else "")
            submitted += [(j, sj, time.time()) for j, sj in zip(group, array)]
        ran = self._collect(submitted, progress)
        returns = assemble_returns(jobs, ran)
        if count_failed(returns):
            log.error("%d of %d jobs failed (`repro status %s`)", count_failed(returns), len(jobs), sweep_dir)
        (log.error if count_failed(returns) else log.info)("%s", final_summary(jobs, returns, sweep_dir))
        return returns

    def _collect(self, submitted, progress: bool) -> dict:
        from tqdm import tqdm

        ran, pending = {}, list(submitted)
        bar = tqdm(total=len(pending), desc=f"{self._EXECUTOR} jobs", unit="job", disable=not progress)
        while pending:
            still = []
            queued = self._queued_job_ids() if any(self._may_vanish(sj, t0) for _, sj, t0 in pending) else None
            for job, sjob, t0 in pending:
                if sjob.done():
                    ran[job.index] = self._result(job, sjob, t0)
                    bar.update(1)
                elif queued is not None and self._may_vanish(sjob, t0) and str(sjob.job_id) not in queued \
                        and not sjob.paths.result_pickle.exists():
                    ran[job.index] = self._vanished(job, sjob, t0)
                    bar.update(1)
                else:
                    still.append((job, sjob, t0))
            pending = still
            if pending:
                time.sleep(float(self.extras.get("poll_s", 5.0)))
        bar.close()
        return ran

    # submitit learns a final state only from `sacct`: on a cluster without accounting, a job that leaves the queue
    # without writing its result (scancel, node failure) stays UNKNOWN and `done()` never turns True — the sweep
    # hung forever (found by tests/test_slurm_real.py). Such a job is recognised by its absence from `squeue`.
    def _may_vanish(self, sjob, submitted_at: float) -> bool:
        return (self._EXECUTOR == "slurm" and time.time() - submitted_at > VANISH_GRACE_S
                and sjob.watcher.get_state(str(sjob.job_id), mode="cache") == "UNKNOWN")

    @staticmethod
    def _queued_job_ids() -> Optional[set]:
        """Ids of every job SLURM still holds (array elements one by one), or None if squeue cannot say."""
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return set(out.stdout.split()) if out.returncode == 0 else None

    def _vanished(self, job, sjob, submitted_at: float) -> JobReturn:
        from repro.runner.failures import JobFailed, record_failure
        from repro.runner.returns import failed_return

        why = "left the SLURM queue without a result (cancelled, or killed on the node; no accounting to say which)"
        info = {"launcher": f"submitit_{self._EXECUTOR}", "job_id": str(sjob.job_id), "state": "VANISHED",
                "stderr_tail": "\n".join((sjob.stderr() or "").splitlines()[-40:]),
                "stderr_path": str(sjob.paths.stderr)}
        record_failure(job, f"failed ({why})", info, submitted_at)
        log.error("FAILED %s (%s): %s", job.label, sjob.job_id, why)
        return failed_return(job, JobFailed(f"job {job.label} {why}; record: {job.run_dir}; log: {sjob.paths.stderr}"))

    def _result(self, job, sjob, submitted_at: float) -> JobReturn:
        from repro.runner.failures import JobFailed, record_failure
        from repro.runner.returns import failed_return

        try:
            return sjob.results()[0]
        except Exception as e:  # noqa: BLE001 — a failed array element must not stop the collection
            tail = "\n".join((sjob.stderr() or "").splitlines()[-40:])
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            info = {"launcher": f"submitit_{self._EXECUTOR}", "job_id": str(sjob.job_id),
                    "state": str(getattr(sjob, "state", "")), "stderr_tail": tail,
                    "stderr_path": str(sjob.paths.stderr)}
            record_failure(job, f"failed ({why})", info, submitted_at)
            log.error("FAILED %s (%s): %s", job.label, sjob.job_id, why)
            return failed_return(job, JobFailed(f"job {job.label} failed: {why}; record: {job.run_dir}; "
                                                f"log: {sjob.paths.stderr}"))


class ReproSlurmLauncher(_ReproSubmititMixin):
    _EXECUTOR = "slurm"


class ReproSubmititLocalLauncher(_ReproSubmititMixin):
    _EXECUTOR = "local"
