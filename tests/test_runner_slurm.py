"""The slurm launcher's logic (plan, skip before submitting, one array per GPU count, failed records) through
hydra-submitit-launcher with submitit's LocalExecutor (`hydra/launcher=slurm_local`) — no SLURM needed."""
from __future__ import annotations

import json

from test_runner import launch, records


def submitted_jobs(sweep_dir):
    """Every job submitit was given (its pickled submission), one folder each."""
    return sorted(p for p in (sweep_dir / ".submitit").glob("*") if p.is_dir() and p.name.isdigit())


def test_submitit_path_skips_before_submitting_and_records_a_killed_job(tmp_path):
    # two jobs asking 2 GPUs each (gpus_per_node comes from the job's config); seed=41 is SIGKILLed in its run.
    first = launch(tmp_path, "first", "seed=40,41", "resources.gpus=2", "hydra.launcher.poll_s=0.5",
                   launcher="slurm_local", faults={"seed=41": "sigkill"})
    assert first.returncode != 0
    recs = records(tmp_path)
    assert recs[40]["status"] == "ok"
    killed = recs[41]
    assert killed["status"] == "failed" and killed["launcher"]["launcher"] == "submitit_local"
    assert killed["error"]["type"] == "JobDied"
    assert len(submitted_jobs(tmp_path / "first")) == 2
    assert "submitted 2 jobs with 2 GPU(s)" in first.stdout + first.stderr
    manifest = json.loads((tmp_path / "first" / "repro_sweep.json").read_text())
    assert [(j["gpus"], j["action"]) for j in manifest["jobs"]] == [(2, "run"), (2, "run")]

    # relaunch without the fault (and with 1 GPU: resources are not part of the identity)
    again = launch(tmp_path, "again", "seed=40,41", "hydra.launcher.poll_s=0.5", launcher="slurm_local")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(submitted_jobs(tmp_path / "again")) == 1          # only the failed one was submitted
    assert "submitted 1 jobs with 1 GPU(s)" in again.stdout + again.stderr
    assert all(r["status"] == "ok" for r in records(tmp_path).values())
