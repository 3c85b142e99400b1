"""Reliability of the gpu_pool launcher (repro/runner, hydra_plugins/repro_launcher), on CPU, through the real CLI:
`python -m repro.run -m hydra/launcher=gpu_pool ...` in a subprocess, tiny random model, real Hydra multirun.

Faults are injected with the test-only REPRO_TEST_FAULTS hook (repro/runner/faults.py) inside the real run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOB = ["env=offline", "model=tiny-llama", "model.seqlen=128", "score=magnitude", "eval.ppl.max_windows=1"]


def launch(tmp: Path, name: str, *overrides: str, faults: dict | None = None, launcher="gpu_pool",
           background: bool = False, timeout: float = 300):
    cmd = [sys.executable, "-m", "repro.run", "-m", f"hydra/launcher={launcher}", "hydra.launcher.progress=false",
           *JOB, f"paths.results={tmp / 'results'}", f"hydra.sweep.dir={tmp / name}", *overrides]
    env = {k: v for k, v in os.environ.items() if k != "REPRO_TEST_FAULTS"}
    if faults:
        env["REPRO_TEST_FAULTS"] = json.dumps(faults)
    if background:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def events(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "repro_events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def records(tmp: Path) -> dict:
    """seed -> record, for every result.json under the results root (each must parse: never half-written)."""
    out = {}
    for path in (tmp / "results" / "runs").glob("*/result.json"):
        record = json.loads(path.read_text())
        out[record["config"]["seed"]] = record
    return out


def max_concurrent(evts: list[dict]) -> int:
    running, peak = 0, 0
    for e in sorted(evts, key=lambda e: (e["t"], e["event"] == "start")):
        running += 1 if e["event"] == "start" else -1
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory):
    """6 jobs, 2 slots; seed=3 raises inside the run, seed=4 is SIGKILLed mid-run."""
    tmp = tmp_path_factory.mktemp("faulty")
    first = launch(tmp, "first", "hydra.launcher.max_parallel=2", "seed=0,1,2,3,4,5",
                   faults={"seed=3": "raise", "seed=4": "sigkill"})
    return tmp, first


def test_failures_are_recorded_and_the_sweep_goes_on(faulty_sweep):
    tmp, first = faulty_sweep
    assert first.returncode != 0, "a sweep with failed jobs must exit non-zero"
    recs = records(tmp)
    assert sorted(recs) == [0, 1, 2, 3, 4, 5]
    assert {s for s, r in recs.items() if r["status"] == "ok"} == {0, 1, 2, 5}
    raised, killed = recs[3], recs[4]
    assert raised["status"] == "failed" and raised["error"]["type"] == "RuntimeError"
    assert "injected test fault" in raised["error"]["traceback"]
    assert "injected test fault" in raised["launcher"]["stderr_tail"]
    assert killed["status"] == "failed" and killed["error"]["type"] == "JobDied"
    assert killed["launcher"]["exit_code"] == -signal.SIGKILL and "SIGKILL" in killed["error"]["message"]
    for seed, r in recs.items():     # each job's own overrides, from the child (ok, raised) or the launcher (killed)
        assert f"seed={seed}" in r["overrides"] and "model=tiny-llama" in r["overrides"], r["overrides"]
    assert "[repro launcher] pid" in killed["launcher"]["stderr_tail"]   # the job's own output, kept
    evts = events(tmp / "first")
    assert sum(e["event"] == "start" for e in evts) == 6
    assert max_concurrent(evts) == 2
    assert all(e["gpus"] == [] for e in evts)                           # CPU mode: no GPU leased
    assert not list((tmp / "results").rglob("*.tmp"))


def test_relaunch_runs_exactly_the_missing_jobs(faulty_sweep):
    tmp, _ = faulty_sweep
    again = launch(tmp, "again", "hydra.launcher.max_parallel=2", "seed=0,1,2,3,4,5")   # fault removed
    assert again.returncode == 0, again.stdout + again.stderr
    started = [e for e in events(tmp / "again") if e["event"] == "start"]
    recs = records(tmp)
    assert sorted(e["identity"] for e in started) == sorted([recs[3]["identity"], recs[4]["identity"]])
    assert all(r["status"] == "ok" for r in recs.values())
    manifest = json.loads((tmp / "again" / "repro_sweep.json").read_text())
    assert [j["action"] for j in manifest["jobs"]] == ["skip", "skip", "skip", "run", "run", "skip"]

    from repro.runner.status import rows_from_sweep_dir   # the first sweep's grid, read from the records now
    assert [r["status"] for r in rows_from_sweep_dir(tmp / "first")] == ["ok"] * 6
    (tmp / "first" / "repro_sweep.json").unlink()            # as for a sweep run by another launcher
    rows = rows_from_sweep_dir(tmp / "first")
    assert [r["identity"] for r in rows] == [recs[s]["identity"] for s in range(6)]


def test_sigint_leaves_no_half_written_record(tmp_path):
    proc = launch(tmp_path, "sw", "hydra.launcher.max_parallel=2", "hydra.launcher.grace_s=30", "seed=10,11,12",
                  faults={"seed=10": "sleep:300", "seed=11": "sleep:300"}, background=True)
    try:
        deadline = time.time() + 180
        while sum(e["event"] == "start" for e in events(tmp_path / "sw")) < 2:
            assert time.time() < deadline and proc.poll() is None, "jobs did not start"
            time.sleep(0.5)
        run_dirs = [tmp_path / "results" / "runs" / e["identity"] for e in events(tmp_path / "sw")]
        while not all((d / "run.log").exists() for d in run_dirs):   # both are inside their run
            assert time.time() < deadline
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    recs = records(tmp_path)
    assert sorted(recs) == [10, 11], out                     # seed=12 never started
    for record in recs.values():
        assert record["status"] == "failed" and record["error"]["type"] == "KeyboardInterrupt"
    assert not list((tmp_path / "results").rglob("*.tmp"))
    for e in events(tmp_path / "sw"):
        if e["event"] == "start":
            with pytest.raises(ProcessLookupError):
                os.kill(e["pid"], 0)                          # no job process left behind


def test_gpu_leases_are_disjoint_and_duplicates_run_once(tmp_path):
    # 4 fake GPU ids on a CPU box: resources.gpus=2 jobs get disjoint pairs; resources is not part of the identity,
    # so resources.gpus=2,1 doubles the grid with duplicates that must not run again.
    done = launch(tmp_path, "sw", "hydra.launcher.gpus=[0,1,2,3]", "seed=30,31", "resources.gpus=2,1")
    assert done.returncode == 0, done.stdout + done.stderr
    evts = events(tmp_path / "sw")
    starts = [e for e in evts if e["event"] == "start"]
    assert len(starts) == 2 and all(len(e["gpus"]) == 2 for e in starts)
    busy = {}
    for e in sorted(evts, key=lambda e: (e["t"], e["event"] == "start")):
        for gpu in e["gpus"]:
            if e["event"] == "start":
                assert gpu not in busy, f"GPU {gpu} leased twice"
                busy[gpu] = e["num"]
            else:
                busy.pop(gpu)
    for e in starts:   # the job's process saw exactly its lease
        log = (tmp_path / "sw" / str(e["num"]) / "launcher.log").read_text()
        assert f"CUDA_VISIBLE_DEVICES='{','.join(e['gpus'])}'" in log
    manifest = json.loads((tmp_path / "sw" / "repro_sweep.json").read_text())
    assert sorted(j["action"] for j in manifest["jobs"]) == ["duplicate"] * 2 + ["run"] * 2


def test_concurrent_sweeps_compute_a_shared_run_once(tmp_path):
    faults = {"seed=21": "sleep:2"}      # both sweeps start with the shared run, which is slow enough to meet on
    a = launch(tmp_path, "a", "seed=21,20", faults=faults, background=True)
    b = launch(tmp_path, "b", "seed=21", faults=faults, background=True)
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    recs = records(tmp_path)
    assert sorted(recs) == [20, 21] and all(r["status"] == "ok" for r in recs.values())
    run_log = (tmp_path / "results" / "runs" / recs[21]["identity"] / "run.log").read_text()
    assert run_log.count("measured sparsity") == 1          # executed once, the other sweep reused it


@pytest.mark.parametrize("overrides, expected", [
    (["hydra.launcher.gpus=[0,1]", "resources.gpus=3", "seed=0,1"], "resources.gpus"),    # more than the node
    (["seed=0,1", "sparsity=0.5,1.5"], "sparsity"),                                      # one bad grid point
    (["hydra/launcher=slurm", "hydra.launcher.partiton=gpu", "seed=0,1"], "partiton"),   # unknown slurm key
])
def test_bad_settings_fail_before_any_job_starts(tmp_path, overrides, expected):
    done = launch(tmp_path, "sw", *overrides)
    assert done.returncode != 0
    assert expected in done.stdout + done.stderr
    assert not (tmp_path / "results" / "runs").exists()
    assert not (tmp_path / "sw" / "repro_events.jsonl").exists()


def test_launcher_settings_are_checked(tmp_path):
    """The same checks, without a sweep: the launchers' typed settings and the per-job GPU limits."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError

    from hydra_plugins.repro_launcher.gpu_pool_launcher import GpuPoolLauncherConf
    from hydra_plugins.repro_launcher.submitit_launchers import ReproSlurmLauncher
    from repro.config import ConfigError
    from repro.runner.plan import PlannedJob
    from repro.runner.pool import PoolSettings

    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(OmegaConf.structured(GpuPoolLauncherConf), {"gpu": [0]})
    for bad in ({"max_parallel": 0}, {"gpus": [0, 0]}, {"start_method": "fork"}, {"gpus": {"a": 1}}):
        with pytest.raises(ConfigError):
            PoolSettings.from_params({"gpus": [], **bad})
    assert PoolSettings.from_params({"gpus": "0,1,2"}).gpus == ["0", "1", "2"]
    cpu = PoolSettings.from_params({"gpus": [], "max_parallel": None})
    assert cpu.gpus == [] and cpu.max_parallel == 1
    job = PlannedJob(index=0, num=0, overrides=["seed=0"], identity="x", results=str(tmp_path), gpus=16,
                     job_dir=str(tmp_path), action="run", status="missing")
    with pytest.raises(ConfigError, match="max_gpus_per_node"):
        ReproSlurmLauncher(max_gpus_per_node=8, submitit_folder=str(tmp_path))._check([job])
    with pytest.raises(ConfigError, match="resources.gpus"):
        PoolSettings.from_params({"gpus": [0, 1]}).check_jobs([job])
