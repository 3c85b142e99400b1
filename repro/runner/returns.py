"""Hydra `JobReturn`s for jobs a launcher did not run itself (skipped, duplicate, died), in grid order."""
from __future__ import annotations

from typing import Optional

from hydra.core.utils import JobReturn, JobStatus


def completed_return(job, value) -> JobReturn:
    ret = JobReturn(overrides=list(job.overrides), cfg=job.sweep_config, working_dir=str(job.run_dir),
                    task_name=str(job.sweep_config.hydra.job.name), status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


def failed_return(job, error: Exception) -> JobReturn:
    ret = JobReturn(overrides=list(job.overrides), cfg=job.sweep_config, working_dir=str(job.run_dir),
                    task_name=str(job.sweep_config.hydra.job.name), status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def _as_duplicate(first: Optional[JobReturn], job) -> JobReturn:
    """A job with the same identity as an earlier one of the sweep shares its outcome."""
    if first is None:   # the first one was skipped (ok record)
        return completed_return(job, {"skipped": True, "run_dir": str(job.run_dir)})
    dup = JobReturn(overrides=list(job.overrides), cfg=first.cfg, hydra_cfg=first.hydra_cfg,
                    working_dir=first.working_dir, task_name=first.task_name, status=first.status)
    dup.return_value = first._return_value
    return dup


def assemble_returns(jobs, ran: dict) -> list:
    """One JobReturn per planned job, in grid order: the ran ones, then skipped / duplicate ones filled in."""
    returns = []
    for job in jobs:
        if job.action == "run":
            returns.append(ran[job.index])
        elif job.action == "skip":
            returns.append(completed_return(job, {"skipped": True, "run_dir": str(job.run_dir)}))
        else:
            returns.append(_as_duplicate(ran.get(job.duplicate_of), job))
    return returns


def count_failed(returns) -> int:
    return sum(r.status == JobStatus.FAILED for r in returns)


def final_summary(jobs, returns, sweep_dir) -> str:
    """The line every launcher ends with: ran / skipped / failed, and the failed jobs' run folders."""
    failed = [j for j, r in zip(jobs, returns) if r.status == JobStatus.FAILED]
    ran = sum(j.action == "run" for j in jobs) - sum(j.action == "run" for j in failed)
    skipped = sum(j.action in ("skip", "duplicate") for j in jobs)
    line = f"sweep {sweep_dir}: {ran} ran, {skipped} skipped, {len(failed)} failed"
    return line + "".join(f"\n  failed #{j.num}: {j.run_dir}" for j in failed)
