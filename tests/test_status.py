"""`repro status`: statuses read from the records and the identity locks; the grid expanded by Hydra itself."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from repro import record as rec
from repro.runner.status import key_metric, record_status, render_table

REPO = Path(__file__).resolve().parents[1]


def test_status_follows_records_and_locks(tmp_path):
    results = str(tmp_path / "results")
    run_dir = rec.run_dir(results, "abc")
    assert record_status(results, "abc") == ("missing", None)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from repro import record as rec; lock = rec.identity_lock(sys.argv[1]); lock.acquire();"
        " print('locked', flush=True); time.sleep(60)"), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert record_status(results, "abc")[0] == "running"
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert record_status(results, "abc")[0] == "missing"      # the OS released the dead holder's lock
    rec.write_json_atomic(run_dir / rec.RECORD_FILE, {"status": "failed", "error": {"type": "JobDied",
                                                                                  "message": "killed"}})
    status, record = record_status(results, "abc")
    assert status == "failed" and key_metric(record).startswith("JobDied: killed")
    rec.write_json_atomic(run_dir / rec.RECORD_FILE, {"status": "ok", "metrics": {
        "ppl": {"wikitext2": 36.4712, "c4": 40.0}, "zeroshot": {"boolq": 0.6, "mean": 0.65}}})
    status, record = record_status(results, "abc")
    assert status == "ok"
    assert key_metric(record) == "wikitext2 ppl 36.471, c4 ppl 40.000, zeroshot 0.6500"
    table = render_table([{"num": 0, "status": status, "metric": key_metric(record), "overrides": "seed=0",
                           "run_dir": str(run_dir)},
                          {"num": 1, "status": "missing", "metric": "", "overrides": "tags=[a,b]", "run_dir": "r"}])
    assert "36.471" in table and table.endswith("2 jobs: 1 ok, 0 failed, 0 running, 1 missing")
    head, rule, first, second = table.splitlines()[:4]
    assert "tags=[a,b]" in second and str(run_dir) in first           # no markup eaten, nothing cut
    assert head.index("| status") == first.index("| ok") == second.index("| missing")   # aligned columns


def test_status_of_a_grid_given_as_overrides_runs_nothing(tmp_path):
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "repro.cli", "status", "--json", "env=offline", "model=tiny-llama",
                           "score=magnitude,dense", "sparsity=0.5,0.7", f"paths.results={results}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout[done.stdout.index("["):])
    assert [r["status"] for r in rows] == ["missing"] * 4
    assert [r["overrides"].split()[2:4] for r in rows] == [
        ["score=magnitude", "sparsity=0.5"], ["score=magnitude", "sparsity=0.7"],
        ["score=dense", "sparsity=0.5"], ["score=dense", "sparsity=0.7"]]
    # a dense run ignores the sparsity: both dense grid points are the same run
    assert rows[2]["identity"] == rows[3]["identity"] != rows[0]["identity"]
    assert not (results / "runs").exists()
