"""Failed records written by a launcher: a job that died before writing its own record (SIGKILL, the kernel's
OOM killer, a segfault, a SLURM timeout) still leaves a `status: failed` record with its exit status and the tail
of its stderr, so `repro status` shows it and a relaunch retries it. A job that did write its failed record
(an exception inside `repro.run.execute`) gets the launcher's information added to it.

Records are written with `write_json_atomic` under the identity's lock: never half-written, never over an
`ok` record that a concurrent sweep produced meanwhile.
"""
from __future__ import annotations

import logging
import signal
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from repro import record as rec

log = logging.getLogger("repro.runner")
TAIL_LINES = 40


class JobFailed(RuntimeError):
    """The exception a launcher returns (in Hydra's JobReturn) for a job that failed outside the task function."""


def stderr_tail(path: Optional[Path], lines: int = TAIL_LINES) -> str:
    if not path or not Path(path).exists():
        return ""
    with open(path, errors="replace") as f:
        return "".join(deque(f, maxlen=lines))


def describe_exit(exit_code: Optional[int]) -> str:
    if exit_code is None:
        return "did not exit (killed after the sweep was interrupted)"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        if -exit_code == signal.SIGKILL:
            return f"killed by {name} (out of memory — the kernel's OOM killer —, a scheduler, or a user)"
        return f"killed by {name}"
    if exit_code == 2:
        return "exited with status 2 (a configuration error; see the log)"
    return f"exited with status {exit_code}"


def record_failure(job, reason: str, launcher_info: dict, attempt_started: float) -> Optional[dict]:
    """Make sure the job's identity has a failed record that says why; return that record.

    `attempt_started` (time.time() when the job's process started) tells the job's own record of this attempt
    from an older one. An `ok` record (a concurrent sweep finished the same run) is left untouched, and so is an
    identity that another process is running right now (it will write its own record; returns None)."""
    from filelock import Timeout

    try:
        lock = rec.identity_lock(job.run_dir, timeout=10)
        lock.acquire()
    except Timeout:
        log.warning("%s: another process is running %s; not writing a failed record", job.label, job.run_dir)
        return None
    try:
        existing = _read(job.run_dir)
        written_now = existing is not None and (job.run_dir / rec.RECORD_FILE).stat().st_mtime >= attempt_started - 1
        if existing and existing.get("status") == "ok":
            return existing
        if existing and existing.get("status") == "failed" and written_now:
            existing["launcher"] = launcher_info
            rec.write_json_atomic(job.run_dir / rec.RECORD_FILE, existing)
            return existing
        record = _failed_record(job, reason, launcher_info, attempt_started)
        rec.write_json_atomic(job.run_dir / rec.RECORD_FILE, record)
        return record
    finally:
        lock.release()


def _read(run_dir: Path) -> Optional[dict]:
    try:
        return rec.read_record(run_dir)
    except (OSError, ValueError):    # an unreadable record is replaced
        return None


def _failed_record(job, reason: str, launcher_info: dict, attempt_started: float) -> dict:
    from repro.stages import resolve

    started = datetime.fromtimestamp(attempt_started, timezone.utc).isoformat(timespec="seconds")
    return {
        **rec.skeleton(resolve(job.run), "failed", started_at=started, overrides=job.overrides),
        "finished_at": rec.now(),
        "error": {"type": "JobDied", "message": f"the job's process {reason} before writing its record",
                  "traceback": launcher_info.get("stderr_tail", "")},
        "launcher": launcher_info,
    }
