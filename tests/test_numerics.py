"""Code changes that change numbers enter the identity (repro/numerics.py): a stored prune made before such a
change is not reused, the collector skips records made before it, and `publish --rekey` moves only the records
whose code already had it."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import repro.numerics as numerics
import repro.prune.pipeline as pipeline
from repro.collect.rekey import rekey
from repro.collect.records.load import load_records
from repro.numerics import Change, numerics_fields
from repro.record import git_commit, identity_of_fields
from repro.run import execute
from repro.stages import prune_fields, resolve
from tests.conftest import compose_cfg, compose_run

ROOT = Path(__file__).resolve().parents[1]
FAST = ("model=tiny-llama", "env=offline", "calib.nsamples=2", "calib.seqlen=32", "eval.ppl.max_windows=1")
# the published SmolLM2 SparseGPT 2:4 record (made at 5110766, after e1f6789, and re-keyed by `publish --rekey`)
SPARSEGPT_24 = ROOT / "results" / "published" / "runs" / "de7966dd64684b20" / "result.json"


def _fake(component="score.magnitude", stage="prune", when=None, commit="c0ffee0"):
    return Change(component, stage, when or {"score.name": "magnitude"}, commit, "test change")


def test_the_sparsegpt_nm_change_names_only_nm_sparsegpt_prunes():
    def fields(*o):
        return resolve(compose_run("env=offline", "model=smollm2-135m", *o)).fields.get("numerics")

    assert fields("score=sparsegpt", "pattern=nm_2_4") == {"prune": {"score.sparsegpt": 1}}
    assert fields("score=sparsegpt", "pattern=nm_4_8") == {"prune": {"score.sparsegpt": 1}}
    assert fields("score=sparsegpt") is None                 # unstructured: identities as before the mechanism
    assert fields("score=wanda", "pattern=nm_2_4") is None
    assert fields("score=dense") is None


def test_a_change_rotates_its_own_stage_and_every_stage_after_it(monkeypatch):
    base = ("model=tiny-llama", "env=offline", "score=magnitude", "recovery=lora")
    before = resolve(compose_run(*base))
    monkeypatch.setattr(numerics, "CHANGES", (_fake("recovery.lora", "recover", {"recovery.name": "lora"}),))
    after = resolve(compose_run(*base))
    assert after.prune_id == before.prune_id                          # the prune is still valid
    assert after.recover_id != before.recover_id and after.identity != before.identity
    monkeypatch.setattr(numerics, "CHANGES", (_fake(),))
    pruned = resolve(compose_run(*base))
    assert pruned.prune_id != before.prune_id and pruned.recover_id != before.recover_id
    dense = resolve(compose_run("model=tiny-llama", "env=offline", "score=dense"))
    assert "numerics" not in dense.fields                             # a prune-stage change never names a dense run
    monkeypatch.setattr(numerics, "CHANGES", (_fake("eval.ppl", "evaluate", {"eval.ppl.batch_size": 4}),))
    assert resolve(compose_run("model=tiny-llama", "env=offline", "score=dense")).fields["numerics"] == \
        {"evaluate": {"eval.ppl": 1}}


def test_versions_count_the_changes_of_a_component(monkeypatch):
    monkeypatch.setattr(numerics, "CHANGES",
                        (_fake(commit="a"), _fake(commit="b"), _fake("score.wanda", when={"score.name": "wanda"})))
    cfg = {"score": {"name": "magnitude"}}
    assert numerics_fields(cfg) == {"prune": {"score.magnitude": 2}}
    assert [c.commit for c in numerics.outdated({"prune": {"score.magnitude": 1}},
                                                {"prune": {"score.magnitude": 2}})] == ["b"]
    assert numerics.stale_reason({"prune": {"score.magnitude": 2}}, {"prune": {"score.magnitude": 2}}) is None


def test_a_stored_prune_from_before_a_change_is_not_reused(tmp_path, monkeypatch):
    calls = []
    real = pipeline.prune_model
    monkeypatch.setattr(pipeline, "prune_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = (*FAST, "score=magnitude", f"paths.results={tmp_path}")
    first = execute(compose_cfg(*cfg))
    assert first["pruned_model"]["built_by"] == git_commit()
    monkeypatch.setattr(numerics, "CHANGES", (_fake(),))
    second = execute(compose_cfg(*cfg))
    assert len(calls) == 2 and second["pruned_model"]["reused"] is False
    assert second["prune_id"] != first["prune_id"]
    assert second["identity_fields"]["numerics"] == {"prune": {"score.magnitude": 1}}
    assert execute(compose_cfg(*cfg, "eval.ppl.max_windows=2"))["pruned_model"]["reused"] is True


def _published(tmp_path, record: dict, name: str) -> Path:
    path = tmp_path / "runs" / name / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _without_numerics(record: dict) -> dict:
    out = json.loads(json.dumps(record))
    out["identity_fields"].pop("numerics")
    out["identity"] = identity_of_fields(out["identity_fields"])
    out["prune_id"] = identity_of_fields(prune_fields(out["identity_fields"]))
    return out


def test_the_collector_skips_a_record_whose_identity_predates_a_change(tmp_path):
    current = json.loads(SPARSEGPT_24.read_text())
    assert current["identity_fields"]["numerics"] == {"prune": {"score.sparsegpt": 1}}
    _published(tmp_path / "ok", current, current["identity"])
    old = _without_numerics(current)
    _published(tmp_path / "old", old, old["identity"])
    assert [r["identity"] for r in load_records(tmp_path / "ok").records] == [current["identity"]]
    recs = load_records(tmp_path / "old")
    assert not recs.records and "predates e1f6789" in recs.skipped[0][1]
    assert "score.sparsegpt" in recs.skipped[0][1] and "--rekey" in recs.skipped[0][1]


def test_rekey_moves_only_records_whose_code_had_the_change(tmp_path, monkeypatch):
    after_change = {"new1", "new2"}
    monkeypatch.setattr(numerics, "contains", lambda commit, change, repo=None: commit in after_change)
    current = json.loads(SPARSEGPT_24.read_text())
    built = _without_numerics(current)
    built["versions"]["git_commit"], built["pruned_model"]["reused"] = "new1", False
    reuser = json.loads(json.dumps(built))                       # an evaluation that reused that prune
    reuser["identity_fields"]["eval"]["ppl"]["max_windows"] = 8
    reuser["identity"] = identity_of_fields(reuser["identity_fields"])
    reuser["versions"]["git_commit"], reuser["pruned_model"]["reused"] = "new2", True
    orphan = json.loads(json.dumps(reuser))                      # reused a prune nobody published: builder unknown
    orphan["pruned_model"]["prune_id"] = "somewhere-else"
    orphan["identity_fields"]["eval"]["ppl"]["max_windows"] = 9
    orphan["identity"] = identity_of_fields(orphan["identity_fields"])
    old = json.loads(json.dumps(built))
    old["identity_fields"]["seed"] = 1
    old["identity"], old["versions"]["git_commit"] = identity_of_fields(old["identity_fields"]), "old"
    for r in (built, reuser, orphan, old):
        _published(tmp_path, r, r["identity"])
    moves, stale = rekey(tmp_path, published=True)
    assert dict(moves)[built["identity"]] == current["identity"]         # the identity the code computes
    assert set(dict(moves)) == {built["identity"], reuser["identity"]}
    assert {i for i, _ in stale} == {orphan["identity"], old["identity"]}
    moved = json.loads((tmp_path / "runs" / current["identity"] / "result.json").read_text())
    assert moved["prune_id"] == current["prune_id"] and moved["rekeyed"][0]["from"] == built["identity"]
    assert moved["metrics"] == current["metrics"]
    assert (tmp_path / "runs" / old["identity"]).is_dir() and not (tmp_path / "runs" / built["identity"]).exists()
    assert rekey(tmp_path, published=True)[0] == []                      # idempotent


def test_contains_reads_git_ancestry():
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", "e1f6789^{commit}"], capture_output=True)
    if known.returncode != 0 or shutil.which("git") is None:
        pytest.skip("this checkout has no full history")
    change = numerics.CHANGES[0]
    assert numerics.contains("5110766", change) and not numerics.contains("034cf50", change)
    assert not numerics.contains(None, change) and not numerics.contains("not-a-commit", change)
