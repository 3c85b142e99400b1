"""The GPU pool: run a planned sweep on one machine, one process per job, each with the GPUs it leased.

    python -m repro.run -m hydra/launcher=gpu_pool model=llama2-7b,mistral-7b sparsity=0.5,0.6,0.7
    python -m repro.run -m hydra/launcher=gpu_pool hydra.launcher.gpus=[0,1,2,3] model=llama2-70b resources.gpus=4
    python -m repro.run -m hydra/launcher=gpu_pool hydra.launcher.gpus=[] hydra.launcher.max_parallel=2 ...  # CPU

Why not Hydra's stock launchers: the basic launcher runs every job in the launcher's own process (CUDA state and
allocator peaks carry over, one crash ends the sweep); joblib reuses workers (CUDA_VISIBLE_DEVICES is read once)
and `submitit_local` gives every job all GPUs (hydra#2757, #2602, #2465; shared/research/framework_anchors.md §4).

Scheduling: a job needs `resources.gpus` GPUs (null: `model.gpus`, default 1); the pool starts, in grid order,
every waiting job that fits in the free GPUs (first fit: small jobs backfill around a large one) and, if set,
under `max_parallel`. CPU mode
(no GPU on the node or `gpus=[]`) runs `max_parallel` jobs at once (default 1) with CUDA_VISIBLE_DEVICES="".
Processes come from a forkserver that imported torch/transformers/repro once (`start_method=forkserver`; `spawn`
starts a fresh interpreter per job). A job that raises, is SIGKILLed or OOM-killed, or segfaults is recorded as
failed (repro/runner/failures.py) and the sweep goes on. Ctrl-C / SIGTERM: SIGINT is forwarded once to each
running job (it records itself as failed, atomically), after `grace_s` the stragglers are killed and the
launcher writes their failed records; a second Ctrl-C kills them at once. Events (start/end, GPUs, pid, exit
status) go to `<sweep dir>/repro_events.jsonl`; each job's stdout/stderr to `<sweep dir>/<job>/launcher.log`.

References: Hydra's BasicLauncher (hydra/_internal/core_plugins/basic_launcher.py: load_sweep_config, job id/num,
run_job with hydra.sweep.dir/subdir) and hydra-submitit-launcher's job side (the job ships as the pickled Hydra
context + Singleton state, then run_job). Deviations from the stock launchers, on purpose:
  * skipped and duplicate jobs are not run: no job dir, no .hydra/ files; their JobReturn is COMPLETED with
    `{"skipped": True, "run_dir": ...}` (or the first job's return) as return value;
  * a job's output goes to its launcher.log, not to the console (parallel jobs would interleave);
  * a job that dies (SIGKILL, OOM kill, segfault, sys.exit) does not end the sweep — with the stock basic
    launcher it does, every job sharing its process; Hydra's sweeper still raises the first failure at the end.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from repro.config import ConfigError, check_choice
from repro.runner.failures import JobFailed, describe_exit, record_failure, stderr_tail
from repro.runner.plan import PlannedJob, importable
from repro.runner.returns import failed_return

log = logging.getLogger("repro.runner")
START_METHODS = ("forkserver", "spawn")


def detect_gpus() -> list[str]:
    """The node's GPU ids: CUDA_VISIBLE_DEVICES if set, else nvidia-smi, else none (CPU mode)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            return []
    return []


@dataclass
class PoolSettings:
    gpus: list                         # GPU ids to lease; [] = CPU mode
    max_parallel: Optional[int]        # jobs at once (CPU mode: slots, default 1; GPU mode: an extra cap)
    threads_per_job: int
    start_method: str = "forkserver"
    dry_run: bool = False
    progress: bool = True
    grace_s: float = 60.0

    @classmethod
    def from_params(cls, params: dict) -> "PoolSettings":
        """Validate `hydra.launcher.*` (unknown keys were already rejected by the structured config)."""
        gpus = params.get("gpus")
        if gpus is None or gpus == "auto":
            gpus = detect_gpus()
        elif isinstance(gpus, str):
            gpus = [g.strip() for g in gpus.split(",") if g.strip()]
        elif isinstance(gpus, int) and not isinstance(gpus, bool):
            gpus = [str(i) for i in range(gpus)]
        elif isinstance(gpus, (list, tuple)):
            gpus = [str(g) for g in gpus]
        else:
            raise ConfigError("hydra.launcher.gpus", gpus, "null (auto), a list of GPU ids, '0,1,2' or a count")
        if len(set(gpus)) != len(gpus):
            raise ConfigError("hydra.launcher.gpus", gpus, "distinct GPU ids")
        max_parallel = params.get("max_parallel")
        if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
            raise ConfigError("hydra.launcher.max_parallel", max_parallel, "null or an integer >= 1")
        check_choice("hydra.launcher.start_method", params.get("start_method", "forkserver"), START_METHODS)
        grace = params.get("grace_s", 60.0)
        if grace is None or grace < 0:
            raise ConfigError("hydra.launcher.grace_s", grace, "a number of seconds >= 0")
        concurrent = (max_parallel or 1) if not gpus else min(len(gpus), max_parallel or len(gpus))
        threads = params.get("threads_per_job") or max(1, (os.cpu_count() or 1) // concurrent)
        return cls(gpus=gpus, max_parallel=max_parallel if gpus else (max_parallel or 1), threads_per_job=threads,
                   start_method=params.get("start_method", "forkserver"), dry_run=bool(params.get("dry_run")),
                   progress=bool(params.get("progress", True)), grace_s=float(grace))

    def check_jobs(self, jobs: list[PlannedJob]) -> None:
        """A job that can never get its GPUs stops the sweep before anything starts."""
        if not self.gpus:
            return
        for job in jobs:
            if job.action == "run" and job.gpus > len(self.gpus):
                raise ConfigError("resources.gpus", job.gpus, f"at most {len(self.gpus)} (the GPUs this launcher "
                                  f"leases: {','.join(self.gpus)})", f"Job {job.label}. Lower resources.gpus, list "
                                  "more GPUs in hydra.launcher.gpus, or launch on SLURM (hydra/launcher=slurm).")


class GpuLeases:
    """Free GPU ids and running-job slots."""

    def __init__(self, settings: PoolSettings):
        self.free = list(settings.gpus)
        self.order = {g: i for i, g in enumerate(settings.gpus)}
        self.cpu_mode = not settings.gpus
        self.max_parallel = settings.max_parallel
        self.running = 0

    def try_lease(self, n: int) -> Optional[list]:
        if self.max_parallel and self.running >= self.max_parallel:
            return None
        if self.cpu_mode:
            ids = []
        elif len(self.free) >= n:
            ids, self.free = self.free[:n], self.free[n:]
        else:
            return None
        self.running += 1
        return ids

    def release(self, ids: list) -> None:
        self.running -= 1
        self.free = sorted(self.free + list(ids), key=self.order.get)


@dataclass
class RunningJob:
    job: PlannedJob
    proc: multiprocessing.process.BaseProcess
    gpus: list
    started: float
    log_path: Path
    return_path: Path
    info: dict = field(default_factory=dict)


class Progress:
    """done / running / failed / skipped with tqdm's ETA, plus one line per finished job."""

    def __init__(self, jobs: list[PlannedJob], enabled: bool):
        from tqdm import tqdm

        self.counts = {"done": 0, "failed": 0, "running": 0,
                       "skipped": sum(j.action in ("skip", "duplicate") for j in jobs)}
        self.bar = tqdm(total=sum(j.action == "run" for j in jobs), desc="sweep", unit="job", disable=not enabled,
                        dynamic_ncols=True)
        self.enabled = enabled
        self._refresh()

    def _refresh(self) -> None:
        self.bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in self.counts.items()))

    def started(self) -> None:
        self.counts["running"] += 1
        self._refresh()

    def finished(self, job: PlannedJob, ok: bool, wall_s: float, why: str = "") -> None:
        self.counts["running"] -= 1
        self.counts["done" if ok else "failed"] += 1
        line = f"{'ok    ' if ok else 'FAILED'} {job.label} ({wall_s:.1f} s){': ' + why if why else ''}"
        if self.enabled:
            self.bar.write(line)
        else:
            log.info(line)
        self.bar.update(1)
        self._refresh()

    def close(self) -> None:
        self.bar.close()


class PoolRunner:
    def __init__(self, settings: PoolSettings, hydra_context, task_function, sweep_dir: Path):
        self.settings, self.hydra_context = settings, hydra_context
        self.task_function = importable(task_function)
        self.sweep_dir = Path(sweep_dir)
        self.events = self.sweep_dir / "repro_events.jsonl"
        self.leases = GpuLeases(settings)
        self.context = multiprocessing.get_context(settings.start_method)
        if settings.start_method == "forkserver":
            self.context.set_forkserver_preload(["repro.runner.child"])

    def warm_up(self) -> None:
        """Start the forkserver now (it imports torch/transformers/repro in the background) so that its start
        overlaps with planning the sweep instead of delaying the first job."""
        if self.settings.start_method == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    # -- the loop --------------------------------------------------------------------------------------------
    def run(self, jobs: list[PlannedJob]) -> dict:
        """Run every job whose action is `run`; return {job.index: JobReturn} for them."""
        from multiprocessing.connection import wait

        queue = deque(j for j in jobs if j.action == "run")
        running: dict[int, RunningJob] = {}
        returns: dict = {}
        progress = Progress(jobs, self.settings.progress)
        # SIGTERM (a scheduler, `kill`) and SIGINT (Ctrl-C; also when a shell started us in the background, which
        # ignores SIGINT) stop the sweep cleanly. The handler only counts: the loop reacts between two steps, so
        # no job is ever started without being tracked.
        self.signals = 0
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while (queue or running) and not self.signals:
                self._start_fitting(queue, running, progress)
                for sentinel in wait([r.proc.sentinel for r in running.values()], timeout=0.5):
                    r = running.pop(sentinel)
                    r.proc.join()
                    returns[r.job.index] = self._finish(r, progress)
            if self.signals:
                log.warning("interrupted: stopping %d running jobs (they record their failure; a second Ctrl-C "
                            "kills them now)", len(running))
                self._interrupt(running, returns, progress)
                raise KeyboardInterrupt("sweep interrupted")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            progress.close()
        return returns

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def _start_fitting(self, queue: deque, running: dict, progress: Progress) -> None:
        for job in list(queue):
            ids = self.leases.try_lease(job.gpus)
            if ids is None:
                continue
            queue.remove(job)
            r = self._start(job, ids)
            running[r.proc.sentinel] = r
            progress.started()

    def _start(self, job: PlannedJob, gpus: list) -> RunningJob:
        import cloudpickle
        from hydra.core.singleton import Singleton

        from repro.runner.child import run_child

        job_dir = Path(job.job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        log_path, return_path = job_dir / "launcher.log", job_dir / ".job_return.pkl"
        return_path.unlink(missing_ok=True)
        payload = cloudpickle.dumps((self.hydra_context, self.task_function, job.sweep_config,
                                     Singleton.get_state()))
        env = {"CUDA_VISIBLE_DEVICES": ",".join(gpus), "REPRO_JOB_NUM": str(job.num),
               "REPRO_PLANNED_IDENTITY": job.identity}
        proc = self.context.Process(target=run_child, name=f"repro-job-{job.num}",
                                    args=(payload, str(log_path), str(return_path), env,
                                          self.settings.threads_per_job, list(job.overrides)))
        started = time.time()
        proc.start()
        self._event("start", job, gpus=gpus, pid=proc.pid)
        return RunningJob(job, proc, gpus, started, log_path, return_path)

    def _finish(self, r: RunningJob, progress: Progress, interrupted: bool = False):
        from hydra.core.utils import JobReturn, JobStatus

        self.leases.release(r.gpus)
        wall = time.time() - r.started
        exit_code = r.proc.exitcode
        ret = _load_return(r.return_path)
        ok = ret is not None and ret.status == JobStatus.COMPLETED and exit_code == 0
        why = ""
        if not ok:
            err = ret._return_value if ret is not None and ret.status == JobStatus.FAILED else None
            why = f"raised {type(err).__name__}: {err}" if err is not None else describe_exit(exit_code)
            if interrupted and err is None:
                why = "interrupted with the sweep; " + why
            info = {"launcher": "gpu_pool", "exit_code": exit_code, "exit": describe_exit(exit_code),
                    "gpus": r.gpus, "host": socket.gethostname(), "job_log": str(r.log_path),
                    "wall_s": round(wall, 3), "stderr_tail": stderr_tail(r.log_path)}
            record_failure(r.job, why, info, r.started)
            if err is None:
                ret = failed_return(r.job, JobFailed(f"job {r.job.label} {why}; record: {r.job.run_dir}; "
                                                      f"log: {r.log_path}"))
        self._event("end", r.job, gpus=r.gpus, pid=r.proc.pid, exit_code=exit_code, ok=ok, wall_s=round(wall, 3))
        progress.finished(r.job, ok, wall, why)
        return ret if ret is not None else JobReturn(status=JobStatus.UNKNOWN)

    def _interrupt(self, running: dict, returns: dict, progress: Progress) -> None:
        from multiprocessing.connection import wait

        first_signals = self.signals
        for r in running.values():
            _signal(r.proc, signal.SIGINT)      # each job is in its own process group: it gets exactly one
        deadline = time.time() + self.settings.grace_s
        while any(r.proc.is_alive() for r in running.values()) and time.time() < deadline \
                and self.signals == first_signals:
            wait([r.proc.sentinel for r in running.values()], timeout=0.2)
        for r in running.values():
            if r.proc.is_alive():
                r.proc.kill()
            r.proc.join()
            returns[r.job.index] = self._finish(r, progress, interrupted=True)
        running.clear()

    def _event(self, event: str, job: PlannedJob, **data) -> None:
        line = {"t": time.time(), "event": event, "num": job.num, "identity": job.identity,
                "overrides": list(job.overrides), **data}
        with open(self.events, "a") as f:
            f.write(json.dumps(line) + "\n")


def _signal(proc, sig) -> None:
    try:
        os.kill(proc.pid, sig)
    except (ProcessLookupError, TypeError):
        pass


def _load_return(path: Path):
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001 — an unreadable return counts as a crash
        return None
