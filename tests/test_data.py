"""Data protocols: exact calibration windows (C4 and WikiText samplers) and the perplexity streams' joins."""
import gzip
import json
import random

import pytest
import torch

from repro.config import CalibConfig, DataSourceConfig
from repro.data.calibration import load_calibration, sample_document_windows, sample_stream_windows
from repro.data.perplexity import C4_VAL_SEGMENTS, load_ppl_stream
from repro.models.tokenizers import byte_tokenizer

TOK = byte_tokenizer()


def reference_c4_loop(docs, nsamples, seqlen, seed):
    """The references' loop written literally (global `random`, whole-document tokenisation, `>` accept test)."""
    random.seed(seed)
    picks = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            enc = TOK(docs[i]).input_ids
            if len(enc) > seqlen:
                break
        j = random.randint(0, len(enc) - seqlen - 1)
        picks.append((i, j))
    return picks


@pytest.fixture
def shard(tmp_path):
    # 12 documents: even ones are long (accepted), odd ones short (rejected), lengths all distinct.
    docs = [("x" * (40 + 7 * k) if k % 2 == 0 else "short doc %d" % k) for k in range(12)]
    docs[4] = "a" * 32  # exactly seqlen bytes: must be rejected by `len > seqlen`
    path = tmp_path / "c4-train.00000-of-01024.json.gz"
    with gzip.open(path, "wt") as f:
        for d in docs:
            f.write(json.dumps({"text": d, "timestamp": "x", "url": "y"}) + "\n")
    return path, docs


def test_c4_sampler_matches_the_reference_loop_including_rejects(shard):
    path, docs = shard
    ids, picks = sample_document_windows(docs, lambda t: TOK(t).input_ids, nsamples=10, seqlen=32, seed=0)
    assert picks == reference_c4_loop(docs, 10, 32, 0)
    assert all(d % 2 == 0 and d != 4 for d, _ in picks)          # short docs and the len == seqlen doc rejected
    for row, (d, off) in zip(ids.tolist(), picks):
        assert row == TOK(docs[d]).input_ids[off:off + 32]
    # pinned values for seed 0, so a change of RNG use shows up even if both loops changed together
    assert picks[:4] == [(6, 48), (6, 2), (8, 62), (6, 19)]


def test_c4_calibration_from_local_shard_through_datasets(shard):
    path, docs = shard
    calib = load_calibration(CalibConfig(name="c4", nsamples=5, seed=3, local_path=str(path)), TOK, seqlen=32)
    assert calib.input_ids.shape == (5, 32) and calib.input_ids.dtype == torch.long
    assert calib.picks == reference_c4_loop(docs, 5, 32, 3)
    assert calib.fingerprint["accept"] == "len > seqlen" and calib.fingerprint["source"]["kind"] == "local"


def test_a_source_without_long_documents_is_an_error_not_a_hang(monkeypatch):
    import repro.data.calibration as cal

    monkeypatch.setattr(cal, "MAX_CONSECUTIVE_REJECTS", 50)
    with pytest.raises(ValueError, match="no document longer than seqlen"):
        sample_document_windows(["short"] * 3, lambda t: TOK(t).input_ids, nsamples=1, seqlen=32, seed=0)


def test_stream_sampler_offsets():
    stream = torch.arange(1000).view(1, -1)
    ids, picks = sample_stream_windows(stream, nsamples=4, seqlen=100, seed=0)
    rng = random.Random(0)
    expected = [rng.randint(0, 1000 - 100 - 1) for _ in range(4)]
    assert [p[1] for p in picks] == expected
    assert torch.equal(ids[0], torch.arange(expected[0], expected[0] + 100))


def test_wikitext2_rows_joined_with_blank_lines(tmp_path):
    f = tmp_path / "wiki.txt"
    f.write_text(" = Title = \nfirst row .\nsecond row .\n")
    ids, fp = load_ppl_stream("wikitext2", DataSourceConfig(local_path=str(f)), TOK, seqlen=8)
    assert TOK.decode(ids[0]) == " = Title = \n\nfirst row .\n\nsecond row ."
    assert fp["join"] == "\n\n" and fp["rows"] == 3 and fp["source"]["kind"] == "local"


def test_c4_validation_first_1100_docs_joined_with_space_and_cut(tmp_path):
    f = tmp_path / "c4-validation.jsonl"
    with open(f, "w") as fh:
        for k in range(1200):
            fh.write(json.dumps({"text": f"d{k}"}) + "\n")
    seqlen = 4
    ids, fp = load_ppl_stream("c4", DataSourceConfig(local_path=str(f)), TOK, seqlen=seqlen)
    joined = " ".join(f"d{k}" for k in range(1100))
    assert ids.shape[1] == min(len(joined), C4_VAL_SEGMENTS * seqlen) == 1024
    assert TOK.decode(ids[0]) == joined[:1024]
    assert fp["rows"] == 1100


def test_ptb_sentences_joined_with_space(tmp_path):
    f = tmp_path / "ptb.jsonl"
    f.write_text("\n".join(json.dumps({"sentence": s}) for s in ["a b", "c d", "e"]) + "\n")
    ids, fp = load_ppl_stream("ptb", DataSourceConfig(local_path=str(f)), TOK, seqlen=2)
    assert TOK.decode(ids[0]) == "a b c d e" and fp["join"] == " "


def test_local_file_without_the_text_column_is_a_clear_error(tmp_path):
    from repro.config import ConfigError

    f = tmp_path / "ptb.jsonl"
    f.write_text(json.dumps({"text": "wrong column"}) + "\n")
    with pytest.raises(ConfigError, match="sentence"):
        load_ppl_stream("ptb", DataSourceConfig(local_path=str(f)), TOK, seqlen=2)


def test_ptb_from_the_hub_reads_its_parquet_conversion_with_datasets_4(monkeypatch):
    """`ptb_text_only` is a script dataset, which `datasets` >= 4 no longer runs: the hub's parquet conversion is
    read instead (same rows), and the fingerprint says so. The hub itself is not reachable here: the call is caught."""
    import datasets

    from repro.data import sources

    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return datasets.Dataset.from_dict({"sentence": ["a b", "c"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets, "__version__", "4.1.0")
    assert sources.load_rows("ptb_test") == ["a b", "c"]
    path, _, kwargs = calls[-1]
    assert path == "parquet" and kwargs["split"] == "test"
    assert kwargs["data_files"]["test"].startswith("hf://datasets/ptb-text-only/ptb_text_only@refs%2Fconvert%2Fparquet/")
    assert "parquet conversion" in sources.describe_source("ptb_test", None)["via"]
    monkeypatch.setattr(datasets, "__version__", "3.6.0")              # script datasets still run there
    sources.load_rows("ptb_test")
    assert calls[-1][0] == "ptb_text_only" and calls[-1][1] == ("penn_treebank",)
