"""What runs inside one job's process (gpu_pool launcher).

The launcher composes the job's config, pickles (hydra_context, task_function, sweep_config, Hydra's singleton
state) with cloudpickle — the same payload hydra-submitit-launcher ships to a SLURM node — and starts a process
running `run_child`. The child:
  1. leaves the launcher's process group (Ctrl-C reaches the launcher only; it forwards one SIGINT per job, so
     a job is never interrupted twice while writing its record);
  2. sends its stdout/stderr to `<job dir>/launcher.log` (the launcher keeps its tail for failed records);
  3. sets CUDA_VISIBLE_DEVICES to its leased GPUs *before* anything touches CUDA, and its torch thread count;
  4. runs Hydra's own `run_job` (job dir, .hydra/ files, job logging, callbacks) on the task function;
  5. writes the JobReturn to a pickle that the launcher returns to Hydra.

Importing this module imports the heavy libraries on purpose: the forkserver preloads it once, and every job is
then forked from that warm process (process start in milliseconds instead of seconds of imports).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
import warnings

# Each forked job re-imports the launcher's __main__ module (`python -m repro.run`) as __mp_main__; runpy warns
# that repro.run is already imported (this module preloaded it). Harmless: silence it.
warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package.*",
                        category=RuntimeWarning)

import cloudpickle
import torch  # noqa: F401  (preloaded into the forkserver)
import transformers  # noqa: F401
from hydra.core.singleton import Singleton
from hydra.core.utils import JobStatus, run_job, setup_globals

import repro.run  # noqa: F401  (the task function's module and everything it imports eagerly)


def _preload_heavy_modules() -> None:
    """The modules every run imports lazily, imported once in the forkserver (missing ones are skipped)."""
    import importlib

    for name in ("repro.models.loading", "repro.models.adapter", "repro.prune.pipeline", "repro.eval",
                 "repro.data.calibration", "repro.data.perplexity", "repro.registry",
                 "transformers.models.llama.modeling_llama", "transformers.models.opt.modeling_opt"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 — a preload is an optimisation only
            pass
    try:
        from repro.registry import names

        names("score")   # imports every registered method module
    except Exception:  # noqa: BLE001
        pass


_preload_heavy_modules()


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this job when the launcher dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:           # the launcher died before prctl took effect
        os._exit(1)


def run_child(payload: bytes, job_log: str, result_path: str, env: dict, threads: int | None, overrides) -> None:
    os.setpgrp()
    _die_with_parent()
    fd = os.open(job_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.update(env)
    print(f"[repro launcher] pid {os.getpid()} CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r} "
          f"threads={threads}", flush=True)
    if threads:
        torch.set_num_threads(threads)

    from repro.runner import faults

    faults.install(overrides)
    t0 = time.perf_counter()
    hydra_context, task_function, sweep_config, singleton_state = cloudpickle.loads(payload)
    Singleton.set_state(singleton_state)
    setup_globals()
    _check_identity(sweep_config, env.get("REPRO_PLANNED_IDENTITY"))
    t1 = time.perf_counter()
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    print(f"[repro launcher] payload {len(payload) / 1024:.0f} KiB unpickled in {t1 - t0:.3f} s; "
          f"run_job {time.perf_counter() - t1:.3f} s", flush=True)
    if ret.status == JobStatus.FAILED:
        err = ret._return_value
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    _write_return(ret, result_path)
    sys.stdout.flush()
    sys.stderr.flush()


def _check_identity(sweep_config, planned: str | None) -> None:
    """The job's identity, computed by the code this process runs, must be the one the launcher planned with:
    if the code changed on disk between planning and the start of the job processes (an edit of repro/ during a
    sweep), the record would land in another run directory than the launcher tracks. Stop instead."""
    if not planned:
        return
    from repro.config import load_run_config
    from repro.stages import run_identity

    actual = run_identity(load_run_config(sweep_config))
    if actual != planned:
        raise SystemExit(f"[repro launcher] identity mismatch: planned {planned}, this job process computes {actual}"
                         " — repro's code changed while the sweep started; relaunch the sweep")


def _write_return(ret, result_path: str) -> None:
    """Pickle the JobReturn (an unpicklable return value or exception is replaced by its repr)."""
    try:
        data = cloudpickle.dumps(ret)
    except Exception:  # noqa: BLE001
        value = ret._return_value
        ret._return_value = RuntimeError(repr(value)) if ret.status == JobStatus.FAILED else repr(value)
        data = cloudpickle.dumps(ret)
    tmp = result_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, result_path)
