"""`repro rekey`: a results folder's records, and the stored stages they name, move to the identities today's code
computes, so the next run of the same config finds its record and reuses its prune instead of recomputing."""
from __future__ import annotations

import json

import repro.numerics as numerics
from repro.collect.rekey import rekey, rekey_main
from repro.run import execute
from tests.conftest import compose_cfg

TEXT = ("The quick brown fox jumps over the lazy dog. " * 400).encode()


def _wanda(calib, results, *extra):
    return ("model=tiny-llama", "env=offline", "score=wanda", "calib=local_text", f"calib.local_path={calib}",
            "calib.nsamples=2", "calib.seqlen=32", "eval.ppl.max_windows=1", f"paths.results={results}", *extra)


def test_a_results_folder_moves_whole_and_the_next_run_finds_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    calib, results = tmp_path / "calib.txt", tmp_path / "results"
    calib.write_bytes(TEXT)
    before = execute(compose_cfg(*_wanda(calib, results)))
    assert (results / "pruned" / before["prune_id"]).is_dir()

    # a later commit changes Wanda's numerics; the code that made the record already had it
    change = numerics.Change("score.wanda", "prune", {"score.name": "wanda"}, "abc1234", "a test change")
    monkeypatch.setattr(numerics, "CHANGES", (*numerics.CHANGES, change))
    monkeypatch.setattr(numerics, "contains", lambda commit, change, repo=None: True)
    rekey_main(["--results", str(results), "--dry-run"])
    assert "would move" in capsys.readouterr().out and (results / "runs" / before["identity"]).is_dir()

    moves, stale = rekey(results)
    assert len(moves) == 1 and moves[0][0] == before["identity"] and stale == []
    new_id = moves[0][1]
    moved = json.loads((results / "runs" / new_id / "result.json").read_text())
    assert (results / "runs" / new_id / "run.log").is_file() and not (results / "runs" / before["identity"]).exists()
    assert moved["identity_fields"]["numerics"] == {"prune": {"score.wanda": 1}}
    assert moved["run_dir"] == str(results / "runs" / new_id) and moved["metrics"] == before["metrics"]
    assert (results / "pruned" / moved["prune_id"]).is_dir() and not (results / "pruned" / before["prune_id"]).exists()

    again = execute(compose_cfg(*_wanda(calib, results)))                     # found, not recomputed
    assert again.get("skipped") is True and again["identity"] == new_id
    other_eval = execute(compose_cfg(*_wanda(calib, results, "eval.ppl.max_windows=2")))
    assert other_eval["pruned_model"]["reused"] is True and other_eval["prune_id"] == moved["prune_id"]
    assert rekey(results) == ([], [])                                         # idempotent


def test_an_existing_run_at_the_new_identity_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    calib, results = tmp_path / "calib.txt", tmp_path / "results"
    calib.write_bytes(TEXT)
    before = execute(compose_cfg(*_wanda(calib, results)))
    change = numerics.Change("score.wanda", "prune", {"score.name": "wanda"}, "abc1234", "a test change")
    monkeypatch.setattr(numerics, "CHANGES", (*numerics.CHANGES, change))
    monkeypatch.setattr(numerics, "contains", lambda commit, change, repo=None: True)
    fresh = execute(compose_cfg(*_wanda(calib, results)))                     # rerun under the new identity
    assert fresh["identity"] != before["identity"]
    moves, stale = rekey(results)
    assert moves == [] and stale[0][0] == before["identity"] and "already exists" in stale[0][1]
    assert json.loads((results / "runs" / fresh["identity"] / "result.json").read_text())["identity"] == \
        fresh["identity"]
