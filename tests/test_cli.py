"""The entry points as a user types them: `python -m repro.run` with Hydra overrides and -m, and `repro`."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_multirun_from_the_command_line(tmp_path):
    results = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "repro.run", "-m", "model=tiny-llama", "env=offline",
                          "score=dense,magnitude", "eval.ppl.max_windows=1", f"paths.results={results}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
    assert sorted(r["config"]["score"]["name"] for r in records) == ["dense", "magnitude"]
    assert all(r["status"] == "ok" for r in records)
    assert all(r["runtime"]["torch_threads"] >= 1 for r in records)     # thread counts change CPU reductions
    for r in records:            # the job's own overrides (the sweep's value, not the comma list): rerunnable
        assert f"score={r['config']['score']['name']}" in r["overrides"] and "model=tiny-llama" in r["overrides"]
    assert "tiny-llama magnitude" in out.stdout and "(dense " in out.stdout   # one-line comparison with dense


def test_bad_input_exits_2_with_a_one_paragraph_message(tmp_path):
    out = subprocess.run([sys.executable, "-m", "repro.cli", "run", "model=tiny-llama", "sparsity=1.2",
                          f"paths.results={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "`sparsity` = 1.2" in out.stderr + out.stdout and "Traceback" not in out.stderr
    assert not list(tmp_path.glob("runs/*"))
