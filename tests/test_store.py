"""Prune once, evaluate many times: stored pruned models (repro/store.py) reused across evaluation configs,
verified before reuse, rebuilt when damaged."""
from __future__ import annotations

import pytest

import repro.prune.pipeline as pipeline
from repro.run import execute
from repro.stages import resolve
from tests.conftest import compose_cfg, compose_run

FAST = ("model=tiny-llama", "env=offline", "calib.nsamples=2", "calib.seqlen=32")


@pytest.fixture
def prune_calls(monkeypatch):
    calls = []
    real = pipeline.prune_model

    def counted(*a, **k):
        calls.append(a[2].score.name)
        return real(*a, **k)
    monkeypatch.setattr(pipeline, "prune_model", counted)
    return calls


@pytest.mark.parametrize("score", ["magnitude", "sparsegpt"])
def test_two_evaluations_prune_once_and_match_a_fresh_prune(tmp_path, prune_calls, score):
    base = (*FAST, f"score={score}", f"paths.results={tmp_path / 'r'}")
    first = execute(compose_cfg(*base, "eval.ppl.max_windows=1"))
    second = execute(compose_cfg(*base, "eval.ppl.max_windows=2"))
    assert prune_calls == [score]
    assert first["identity"] != second["identity"] and first["prune_id"] == second["prune_id"]
    assert first["pruned_model"]["reused"] is False and second["pruned_model"]["reused"] is True
    assert (first["pruned_model"]["updated_weights"] > 0) == (score == "sparsegpt")
    assert second["prune"] == first["prune"] and second["sparsity"] == first["sparsity"]
    fresh = execute(compose_cfg(*FAST, f"score={score}", f"paths.results={tmp_path / 'fresh'}",
                                "eval.ppl.max_windows=2"))
    assert fresh["pruned_model"]["reused"] is False
    assert second["metrics"]["ppl"] == fresh["metrics"]["ppl"]          # bit-identical evaluation after reuse


def test_the_paper_experiments_share_their_prunes(prune_calls):
    """experiment=neuronal/ppl then experiment=neuronal/zeroshot_70: the Wanda 70% prunes are the same prune."""
    grid = ("model=llama2-7b", "score=wanda", "sparsity=0.7", "allocation=owl")
    ppl = resolve(compose_run("experiment=neuronal/ppl", *grid))
    zs = resolve(compose_run("experiment=neuronal/zeroshot_70", *grid))
    assert ppl.identity != zs.identity and ppl.prune_id == zs.prune_id


def test_a_damaged_store_is_rebuilt(tmp_path, prune_calls):
    base = (*FAST, "score=wanda", f"paths.results={tmp_path}")
    first = execute(compose_cfg(*base, "eval.ppl.max_windows=1"))
    masks = tmp_path / "pruned" / first["prune_id"] / "masks.npz"
    data = bytearray(masks.read_bytes())
    data[len(data) // 2] ^= 0xFF
    masks.write_bytes(bytes(data))
    second = execute(compose_cfg(*base, "eval.ppl.max_windows=2"))
    assert prune_calls == ["wanda", "wanda"] and second["pruned_model"]["reused"] is False
    assert second["sparsity"] == first["sparsity"]
    third = execute(compose_cfg(*base, "eval.ppl.max_windows=3"))
    assert prune_calls == ["wanda", "wanda"] and third["pruned_model"]["reused"] is True


def test_dense_runs_have_no_prune_stage(tmp_path, prune_calls):
    rec = execute(compose_cfg("model=tiny-llama", "env=offline", "score=dense", "eval.ppl.max_windows=1",
                              f"paths.results={tmp_path}"))
    assert rec["prune_id"] is None and rec["pruned_model"] is None and not (tmp_path / "pruned").exists()


def test_a_recovery_that_prunes_itself_gets_the_dense_model_and_its_work_folder(tmp_path, prune_calls):
    from dataclasses import dataclass

    from repro import registry
    from repro.methods.base import MethodConfig

    @dataclass
    class SelfPruningConfig(MethodConfig):
        name: str = "self_pruning_test"

    seen = {}

    class SelfPruning:
        prunes_itself = True
        needs_calibration = True

        def __init__(self, cfg):
            self.cfg = cfg

        def recover(self, model, tokenizer, run, calib, workdir):
            seen["zeros"] = sum(int((p == 0).sum()) for p in model.parameters())
            seen["workdir"], seen["calib"] = workdir, calib
            return {"rounds": 1}

    with registry.registered("recovery", "self_pruning_test", SelfPruning, SelfPruningConfig):
        rec = execute(compose_cfg(*FAST, "score=wanda", "eval.ppl.max_windows=1", f"paths.results={tmp_path}",
                                  "recovery.name=self_pruning_test"))
        run = resolve(compose_run(*FAST, "score=wanda", "eval.ppl.max_windows=1", f"paths.results={tmp_path}",
                                  "recovery.name=self_pruning_test"))
    assert prune_calls == [] and seen["zeros"] == 0 and seen["calib"] is not None
    assert seen["workdir"] == tmp_path / "recovered" / run.recover_id and seen["workdir"].is_dir()
    assert rec["prune"]["pruned_by"] == "recovery" and rec["recovery"] == {"rounds": 1}
    assert rec["recover_id"] == run.recover_id and rec["pruned_model"] is None


@pytest.mark.parametrize("score", ["magnitude", "wanda", "multiflow", "dsnot", "sparsegpt", "alps", "slimgpt"])
def test_every_scorer_declares_whether_it_changes_kept_weights(tiny_llama, score):
    """The store keeps the values of the linears a scorer declares it updates (`Scorer.updates_weights`), with no
    copy of the dense weights: a scorer that changed a kept weight without saying so would be reused wrongly."""
    import copy

    import torch

    from repro.data.calibration import load_calibration
    from repro.models.adapter import adapter_for
    from repro.registry import method_class, names

    # mosp is not here: a multi-objective run stores its own solution (repro/methods/mosp_store.py), not a pruned model
    assert set(names("score")) - {"dense", "mosp"} <= {"magnitude", "wanda", "multiflow", "dsnot", "sparsegpt", "alps",
                                                       "slimgpt"}, "a new scorer: add it to this test"
    model, tokenizer = tiny_llama
    model = copy.deepcopy(model)
    extra = ("pattern=structured", "sparsity=0.2") if score == "slimgpt" else ("sparsity=0.5",)
    run = compose_run(*FAST, f"score={score}", *extra)
    ids = load_calibration(run.calib, tokenizer, 32).input_ids
    adapter = adapter_for(model)
    before = {n: l.weight.detach().clone() for n, l in adapter.all_linears(model).items()}
    changed: set = set()
    pipeline.prune_model(model, adapter, run, ids, changed)
    really = {n for n, l in adapter.all_linears(model).items()
              if bool(((l.weight != before[n]) & (l.weight != 0)).any())}
    assert bool(really) == method_class("score", score).updates_weights
    assert really <= changed
