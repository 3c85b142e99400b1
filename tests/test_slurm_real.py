"""The SLURM launcher against a real single-node SLURM (slurmctld + slurmd on this machine, from the OS packages:
`apt-get install slurm-wlm`; docs/runner.md). A 4-job sweep where one job raises and one is cancelled with
`scancel` while it runs; then the same command again finishes only those two. Skipped, with the reason, where
SLURM is not installed or its daemons do not come up (not root, no hostname, ...).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_runner import launch, records

SLURM_CONF = """\
ClusterName=repro-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/ctld.log
SlurmdLogFile={d}/log/d.log
SlurmctldPort={port}
SlurmdPort={dport}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=2
NodeName={host} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
SLURM = ["hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0", "hydra.launcher.mem_gb=1",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10", "hydra.launcher.poll_s=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _squeue(env) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], env=env, capture_output=True, text=True, timeout=30)
    return [tuple(line.split()) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; apt-get install slurm-wlm)")
    if os.geteuid() != 0:
        pytest.skip("a throw-away SLURM with SlurmUser=root needs root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, d=d, port=_free_port(), dport=_free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = [subprocess.run([daemon, "-f", str(conf)], env=env, capture_output=True, text=True, timeout=60)
               for daemon in (shutil.which("slurmctld"), shutil.which("slurmd"))]
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout.strip()
        if state == "idle":
            break
        time.sleep(1)
    else:
        logs = " | ".join(p.read_text()[-300:] for p in (d / "log").glob("*.log"))
        _stop(d)
        pytest.skip(f"SLURM daemons did not come up within 60 s ({[s.stderr[-200:] for s in started]}; {logs})")
    yield env
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
    deadline = time.time() + 20
    while _squeue(env) and time.time() < deadline:
        time.sleep(1)
    _stop(d)


def _stop(d: Path) -> None:
    """SIGTERM both daemons, then SIGKILL what is still alive after 10 s."""
    pids = [int(p.read_text().strip()) for p in (d / "slurmd.pid", d / "slurmctld.pid") if p.exists()]
    for sig in (15, 9):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while sig == 15 and time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.5)


def test_real_slurm_sweep_with_a_failure_and_a_cancel_then_resume(slurm, tmp_path, monkeypatch):
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    sweep = launch(tmp_path, "first", *SLURM, "seed=0,1,2,3", launcher="slurm",
                   faults={"seed=2": "raise", "seed=3": "sleep:600"}, background=True)
    try:
        deadline, cancelled = time.time() + 240, None
        while time.time() < deadline and cancelled is None:       # array element 3 = seed 3 (job order)
            running = [job for job, state in _squeue(slurm) if job.endswith("_3") and state == "RUNNING"]
            if running:
                subprocess.run(["scancel", running[0]], env=slurm, check=True, timeout=30)
                cancelled = running[0]
            time.sleep(1)
        assert cancelled, "seed=3 never ran under SLURM"
        out, _ = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode != 0, out[-2000:]                      # failed jobs make the sweep exit non-zero
    recs = records(tmp_path)
    assert {s: r["status"] for s, r in recs.items()} == {0: "ok", 1: "ok", 2: "failed", 3: "failed"}, out[-2000:]
    assert "injected test fault" in recs[2]["error"]["message"]
    first_ok = {s: recs[s]["finished_at"] for s in (0, 1)}

    again = launch(tmp_path, "again", *SLURM, "seed=0,1,2,3", launcher="slurm")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    recs = records(tmp_path)
    assert all(r["status"] == "ok" for r in recs.values()) and len(recs) == 4
    assert {s: recs[s]["finished_at"] for s in (0, 1)} == first_ok          # the ok runs were not redone
    plan = json.loads((tmp_path / "again" / "repro_sweep.json").read_text())["jobs"]
    assert [job["action"] for job in plan] == ["skip", "skip", "run", "run"]
