"""Identity sees the inputs: a changed byte in a local file is another run, a moved unchanged file is not;
a corrupt record is reported by `repro status` and recomputed by the next run without `force`."""
from __future__ import annotations

import shutil

from repro import record as rec
from repro.fingerprint import fingerprint
from repro.run import execute, run_identity
from repro.runner.status import key_metric, record_status
from tests.conftest import compose_cfg, compose_run

TEXT = ("The quick brown fox jumps over the lazy dog. " * 400).encode()


def _wanda(path, results):
    return ("model=tiny-llama", "env=offline", "score=wanda", "calib=local_text", f"calib.local_path={path}",
            "calib.nsamples=2", "calib.seqlen=32", "eval.ppl.max_windows=1", f"paths.results={results}")


def test_one_changed_byte_recomputes_and_a_moved_file_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    results = tmp_path / "results"
    calib = tmp_path / "a" / "calib.txt"
    calib.parent.mkdir()
    calib.write_bytes(TEXT)
    first = execute(compose_cfg(*_wanda(calib, results)))
    assert first["status"] == "ok" and first["identity_fields"]["inputs"]["calib.local_path"] == fingerprint(calib)

    moved = tmp_path / "b" / "moved.txt"
    moved.parent.mkdir()
    shutil.move(calib, moved)
    again = execute(compose_cfg(*_wanda(moved, results)))
    assert again.get("skipped") is True and again["identity"] == first["identity"]

    data = bytearray(TEXT)
    data[100] = ord("X")
    moved.write_bytes(bytes(data))
    changed = execute(compose_cfg(*_wanda(moved, results)))
    assert changed.get("skipped") is None and changed["identity"] != first["identity"]
    assert changed["identity"] == run_identity(compose_run(*_wanda(moved, results)))


def test_magnitude_and_dense_ignore_the_calibration_file(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_bytes(TEXT)
    b.write_bytes(TEXT[:-1] + b"!")
    for score in ("magnitude", "dense"):
        ids = {run_identity(compose_run("model=tiny-llama", "env=offline", f"score={score}", "calib=local_text",
                                        f"calib.local_path={p}")) for p in (a, b)}
        assert len(ids) == 1, score
    ids = {run_identity(compose_run("model=tiny-llama", "env=offline", "score=wanda", "calib=local_text",
                                    f"calib.local_path={p}")) for p in (a, b)}
    assert len(ids) == 2


def test_a_model_directory_is_fingerprinted_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"\0" * 64)
    before = fingerprint(d)
    shutil.copytree(d, tmp_path / "elsewhere")
    assert fingerprint(tmp_path / "elsewhere") == before
    (d / "model.safetensors").write_bytes(b"\0" * 63 + b"\1")
    assert fingerprint(d) != before
    assert fingerprint("HuggingFaceTB/SmolLM2-135M") is None      # a hub id stays identified by its name


def test_a_corrupt_record_is_reported_and_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    results = tmp_path / "results"
    cfg = ("model=tiny-llama", "env=offline", "eval.ppl.max_windows=1", f"paths.results={results}")
    first = execute(compose_cfg(*cfg))
    path = rec.run_dir(results, first["identity"]) / rec.RECORD_FILE
    path.write_text(path.read_text()[:50])                       # half-written
    status, info = record_status(str(results), first["identity"])
    assert status == "corrupt" and str(path) in key_metric(info)
    again = execute(compose_cfg(*cfg))
    assert again["status"] == "ok" and again.get("skipped") is None
    assert rec.read_record(path)["status"] == "ok"


def test_recovery_data_counts_by_content_not_by_location(tmp_path, monkeypatch):
    """A fine-tuning file moved (another checkout) keeps the run and recover ids; one changed byte changes both."""
    from repro.stages import resolve

    monkeypatch.setenv("REPRO_FINGERPRINT_CACHE", str(tmp_path / "fp.json"))
    rows = b'{"instruction": "Say hi.", "input": "", "output": "Hi."}\n' * 8
    a, b, c = tmp_path / "a" / "d.jsonl", tmp_path / "b" / "d.jsonl", tmp_path / "c" / "d.jsonl"
    for p, body in ((a, rows), (b, rows), (c, rows.replace(b"Hi.", b"Ho."))):
        p.parent.mkdir()
        p.write_bytes(body)

    def ids(path):
        run = resolve(compose_cfg("model=tiny-llama", "env=offline", "score=wanda", "recovery=lora",
                                  f"recovery_budget.data.path={path}"))   # env=offline: the budget sets it
        assert str(path) not in str(run.fields)          # the location is not part of the identity
        return run.identity, run.recover_id, run.prune_id

    assert ids(a) == ids(b)
    changed = ids(c)
    assert changed[0] != ids(a)[0] and changed[1] != ids(a)[1] and changed[2] == ids(a)[2]
