"""The wandb mirror (repro/logging_mirror.py): offline by default, project/group from the experiment, and never
able to fail a run."""
from __future__ import annotations

import time

import pytest

from conftest import compose_run
from repro.logging_mirror import wandb_names
from repro.run import execute

TINY = ["env=offline", "model=tiny-llama", "model.seqlen=128", "score=magnitude", "eval.ppl.max_windows=1"]


def test_record_is_mirrored_to_an_offline_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)      # conftest disables wandb for everyone else
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = compose_run(*TINY, "logger=wandb", "experiment.paper=owl", "experiment.table=table3",
                      f"paths.results={tmp_path}")
    record = execute(run)
    assert record["status"] == "ok"
    assert wandb_names(run.logger, record) == ("repro-owl", "owl/table3")
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    expected = [s.encode() for s in (record["identity"], "repro-owl", "owl/table3", "ppl/wikitext2",
                                     "sparsity/overall")]
    deadline = time.time() + 60       # wandb's service process may still be flushing its binary log
    while not all(e in files[0].read_bytes() for e in expected) and time.time() < deadline:
        time.sleep(0.5)
    data = files[0].read_bytes()      # wandb's binary log: the strings we sent are in it
    assert [e for e in expected if e not in data] == []


def test_a_broken_mirror_never_fails_the_run(tmp_path, caplog):
    run = compose_run(*TINY, "logger=wandb", "logger.mode=nonsense", f"paths.results={tmp_path}")
    record = execute(run)
    assert record["status"] == "ok"
    assert "logger mirror failed" in caplog.text
    assert not (tmp_path / "wandb").exists()
