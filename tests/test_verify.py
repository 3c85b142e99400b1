"""`repro verify`: a recorded run reruns from its own config, its inputs found by content, its identity recomputed
before anything runs, and every number compared; every published record still recomputes its identity."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from repro.collect import publish
from repro.collect.rekey import rekey
from repro.collect.verify import compare, locate_inputs, plan_rerun, runtime_notes, verify, verify_main
from repro.fingerprint import fingerprint
from repro.record import dotted_get, identity_of_fields
from repro.run import execute
from tests.conftest import compose_cfg

PUBLISHED = sorted((publish.PUBLISHED / "runs").glob("*/result.json"))
TEXT = ("The quick brown fox jumps over the lazy dog. " * 400).encode()


@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.name)
def test_every_published_record_recomputes_its_identity(path, tmp_path):
    """A config field added with a default, an identity-rule change or a moved input would orphan the published
    records (their runs would recompute, their stored prunes go unused); register the field in repro/numerics.py
    ADDED and `python -m repro.collect.publish --rekey`."""
    record = json.loads(path.read_text())
    plan = plan_rerun(record, tmp_path / "verify")
    assert plan.problems == [] and plan.identity == record["identity"]


def _wanda(calib, results):
    return ("model=tiny-llama", "env=offline", "score=wanda", "calib=local_text", f"calib.local_path={calib}",
            "calib.nsamples=2", "calib.seqlen=32", "eval.ppl.max_windows=1", f"paths.results={results}")


def test_a_rerun_from_the_record_reproduces_it_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    calib = tmp_path / "a" / "calib.txt"
    calib.parent.mkdir()
    calib.write_bytes(TEXT)
    record = execute(compose_cfg(*_wanda(calib, tmp_path / "results")))
    (tmp_path / "b").mkdir()
    shutil.move(calib, tmp_path / "b" / "calib.txt")            # the input moved: found through --map, by content

    report = verify(record, tmp_path / "verify", maps=[(str(tmp_path / "a"), str(tmp_path / "b"))])
    assert report["verdict"] == "reproduced" and report["problems"] == []
    assert report["moved"] == [{"field": "calib.local_path", "recorded": str(calib),
                                "here": str(tmp_path / "b" / "calib.txt")}]
    assert {r["metric"]: r["verdict"] for r in report["metrics"]} == {"ppl.wikitext2": "identical",
                                                                     "sparsity.overall": "identical"}
    assert (tmp_path / "verify" / "runs" / record["identity"] / "result.json").is_file()   # scratch, not results/
    saved = json.loads((tmp_path / "verify" / "verify" / f"{record['identity']}.json").read_text())
    assert saved["verdict"] == "reproduced"

    default = torch.get_num_threads()                             # reruns at the record's thread count, then back
    one_thread = {**record, "runtime": {**record["runtime"], "torch_threads": 1}}
    report = verify(one_thread, tmp_path / "verify", maps=[(str(tmp_path / "a"), str(tmp_path / "b"))])
    assert report["threads"] == 1 and torch.get_num_threads() == default

    (tmp_path / "b" / "calib.txt").write_bytes(TEXT[:-1] + b"!")   # same path, other content: not attempted
    report = verify(record, tmp_path / "verify", maps=[(str(tmp_path / "a"), str(tmp_path / "b"))])
    assert report["verdict"] == "not run" and "metrics" not in report
    want = record["identity_fields"]["inputs"]["calib.local_path"]
    assert "calib.local_path" in report["problems"][0] and want in report["problems"][0]


def test_inputs_are_found_by_content_under_this_checkout(tmp_path):
    here = tmp_path / "checkout" / "repro" / "assets" / "x.txt"
    here.parent.mkdir(parents=True)
    here.write_bytes(TEXT)
    want = fingerprint(here)
    cfg = {"data": {"wikitext2": {"local_path": "/other/clone/repro/assets/x.txt"}}}
    moved, problems = locate_inputs(cfg, {"data.wikitext2.local_path": want}, root=tmp_path / "checkout")
    assert problems == [] and cfg["data"]["wikitext2"]["local_path"] == str(here)
    assert moved == [("data.wikitext2.local_path", "/other/clone/repro/assets/x.txt", str(here))]
    cfg = {"data": {"wikitext2": {"local_path": "/other/clone/repro/assets/x.txt"}}}
    moved, problems = locate_inputs(cfg, {"data.wikitext2.local_path": "0" * 16}, root=tmp_path / "checkout")
    assert moved == [] and "data.wikitext2.local_path" in problems[0] and "0" * 16 in problems[0]


def test_compare_verdicts():
    recorded = {"metrics": {"ppl": {"wikitext2": 10.0, "c4": 20.0, "ptb": 30.0}, "speed": {"tok_s": 5.0},
                            "pareto": {"front": [[1.0, 2.0]]}}, "sparsity": {"overall": 0.5}}
    rerun = {"metrics": {"ppl": {"wikitext2": 10.0, "c4": 20.0001, "ptb": 31.0}, "speed": {"tok_s": 9.0},
                         "pareto": {"front": [[1.0, 2.5]]}}, "sparsity": {"overall": 0.5}}
    rows = {r["metric"]: r for r in compare(recorded, rerun, rtol=1e-4)}
    assert {k: r["verdict"] for k, r in rows.items()} == {
        "ppl.wikitext2": "identical", "ppl.c4": "within", "ppl.ptb": "differs", "speed.tok_s": "timing",
        "pareto.front": "differs", "sparsity.overall": "identical"}
    assert rows["pareto.front"]["rel_delta"] == pytest.approx(0.25)
    del rerun["metrics"]["ppl"]["c4"]
    assert {r["metric"]: r["verdict"] for r in compare(recorded, rerun)}["ppl.c4"] == "missing"


def _lacking_added_fields(record: dict, *fields: str) -> dict:
    """The record as the code before those fields existed wrote it."""
    old = json.loads(json.dumps(record))
    for node in (old["config"], old["identity_fields"]):
        for dotted in fields:
            parent, _, leaf = dotted.rpartition(".")
            dotted_get(node, parent).pop(leaf)
    old["identity"] = identity_of_fields(old["identity_fields"])
    return old


def test_a_record_from_before_a_field_existed_reruns_with_its_legacy_value_and_rekeys(tmp_path):
    """The LoSA run made before `recovery.final_sparsity` existed ran what `reference` runs now."""
    losa = next(json.loads(p.read_text()) for p in PUBLISHED
                if json.loads(p.read_text())["config"]["recovery"]["name"] == "losa")
    assert losa["config"]["recovery"]["final_sparsity"] == "reference"
    old = _lacking_added_fields(losa, "recovery.final_sparsity", "recovery.data.task", "recovery.data.task_path")
    plan = plan_rerun(old, tmp_path / "verify")
    assert plan.legacy == {"recovery.data.task": None, "recovery.data.task_path": None,
                           "recovery.final_sparsity": "reference"}
    assert plan.identity == losa["identity"] and plan.problems == []     # the same computation: it may run
    assert "recovery.final_sparsity" in plan.notes[0] and "--rekey" in plan.notes[0]
    other = json.loads(json.dumps(old))                                 # an identity field that is not an addition
    other["identity_fields"]["sparsity"] = 0.6
    assert "sparsity (0.6 -> 0.7)" in plan_rerun(other, tmp_path / "verify").problems[0]

    dst = tmp_path / "published" / "runs" / old["identity"] / "result.json"
    dst.parent.mkdir(parents=True)
    dst.write_text(json.dumps(old))
    moves, stale = rekey(tmp_path / "published", published=True)
    assert moves == [(old["identity"], losa["identity"])] and stale == []
    moved = json.loads((tmp_path / "published" / "runs" / losa["identity"] / "result.json").read_text())
    assert moved["identity_fields"] == losa["identity_fields"] and moved["metrics"] == losa["metrics"]
    assert moved["prune_id"] == losa["prune_id"] and moved["recover_id"] == losa["recover_id"]
    assert plan_rerun(moved, tmp_path / "verify").problems == []


def test_cli_exit_status_says_what_happened(tmp_path, capsys):
    failed = json.loads(PUBLISHED[0].read_text()) | {"status": "failed"}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(failed))
    with pytest.raises(SystemExit) as e:
        verify_main([str(path), "--dry-run", "--out", str(tmp_path / "v")])
    assert e.value.code == 2 and "only ok records" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        verify_main([str(PUBLISHED[0]), "--dry-run", "--out", str(tmp_path / "v")])
    assert e.value.code == 0 and "=> ready" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        verify_main([str(PUBLISHED[0]), "--map", "no-equals-sign"])
    assert e.value.code == 2


def test_notes_name_what_differed_outside_the_identity():
    old = {"versions": {"torch": "2.13.0", "git_commit": "a"}}
    new = {"versions": {"torch": "2.13.0", "git_commit": "b"}, "runtime": {"torch_threads": 2}}
    assert runtime_notes(old, new, differs=False) == ["versions.git_commit: a recorded, b here"]
    assert "predates `runtime`" in runtime_notes(old, new, differs=True)[0]
    assert runtime_notes({**old, "runtime": {"torch_threads": 1}}, new, differs=True)[0] == \
        "runtime.torch_threads: 1 recorded, 2 here"
