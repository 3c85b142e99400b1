"""Hydra launcher plugin `gpu_pool`: a multirun sweep across the GPUs of one node (or CPU slots), resumable.

    python -m repro.run -m hydra/launcher=gpu_pool score=magnitude,wanda sparsity=0.5,0.6,0.7
    python -m repro.run -m hydra/launcher=gpu_pool hydra.launcher.dry_run=true ...   # the grid and its status

Settings (`conf/hydra/launcher/gpu_pool.yaml`, typed by `GpuPoolLauncherConf`): gpus, max_parallel,
threads_per_job, start_method, dry_run, progress, grace_s. GPUs per job: each job's
`resources.gpus` (null: its `model.gpus`, default 1).
The work is in repro/runner/ (plan.py: resume/dedup/validation, pool.py: processes and GPU leases).
Discovery: `python -m repro.run --info plugins` lists GpuPoolLauncher. This module imports nothing heavy.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("repro.runner")


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.repro_launcher.gpu_pool_launcher.GpuPoolLauncher"
    gpus: Optional[Any] = None            # null: CUDA_VISIBLE_DEVICES, else nvidia-smi, else CPU mode; [0,1] | "0,1" | []
    max_parallel: Optional[int] = None    # CPU mode: jobs at once (null = 1); GPU mode: an extra cap (null = none)
    threads_per_job: Optional[int] = None  # torch threads per job; null = CPU cores / concurrent jobs
    start_method: str = "forkserver"      # forkserver (warm, fast starts) | spawn (a fresh interpreter per job)
    dry_run: bool = False                 # print the expanded grid with each job's status; run nothing
    progress: bool = True                 # live progress bar (done / running / failed / skipped, ETA)
    grace_s: float = 60.0                 # on Ctrl-C/SIGTERM: time the jobs get to record their failure


ConfigStore.instance().store(group="hydra/launcher", name="repro_gpu_pool", node=GpuPoolLauncherConf,
                             provider="repro")


class GpuPoolLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.utils import configure_log, setup_globals

        from repro.runner.plan import log_plan_summary, plan_jobs, plan_table, write_manifest
        from repro.runner.pool import PoolRunner, PoolSettings
        from repro.runner.returns import assemble_returns, completed_return, count_failed, final_summary

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        settings = PoolSettings.from_params(self.params)          # bad settings fail before any job starts
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        runner = PoolRunner(settings, self.hydra_context, self.task_function, sweep_dir)
        if not settings.dry_run:
            runner.warm_up()                                      # overlaps the forkserver's imports with planning
        t0 = time.perf_counter()
        jobs = plan_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx, settings.progress)
        settings.check_jobs(jobs)
        write_manifest(sweep_dir, jobs, "gpu_pool", plan_s=time.perf_counter() - t0)
        if settings.dry_run:
            if settings.progress:
                print(plan_table(jobs), flush=True)
            return [completed_return(j, j.manifest_entry()) for j in jobs]
        log_plan_summary(jobs)
        mode = f"GPUs {','.join(settings.gpus)}" if settings.gpus else f"CPU, {settings.max_parallel} at once"
        log.info("gpu_pool: %s, %d torch threads per job, sweep dir %s", mode, settings.threads_per_job, sweep_dir)
        ran = runner.run(jobs)
        returns = assemble_returns(jobs, ran)
        failed = count_failed(returns)
        if failed:
            log.error("%d of %d jobs failed (records and logs are listed by `repro status %s`)",
                      failed, len(jobs), sweep_dir)
        (log.error if count_failed(returns) else log.info)("%s", final_summary(jobs, returns, sweep_dir))
        return returns
