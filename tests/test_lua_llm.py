"""Lua-LLM (repro/allocation/lua_llm.py): init = uniform Wanda, regulariser, gradients, exact budget, bad input."""
from __future__ import annotations

import copy

import pytest
import torch

from repro.allocation import lua_llm_train as T
from repro.allocation.lua_llm import unpack_mask
from repro.config import ConfigError
from repro.methods.base import AllocationContext
from repro.models.adapter import adapter_for
from repro.prune.masks import keep_highest_per_row, prune_lowest_per_row
from repro.prune.pipeline import measure_sparsity, prune_model
from repro.registry import build
from tests.conftest import compose_cfg, compose_run

FAST = ("model=tiny-llama", "score=wanda", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=4",
        "model.seqlen=32")
LUA = ("allocation=lua_llm", "allocation.log_every=1000", "allocation.plot=false",
       "allocation.train_windows=null")


def _calib(n=4, seqlen=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 259, (n, seqlen), generator=g)


def _prune(model, run, ids):
    model = copy.deepcopy(model)
    report = prune_model(model, adapter_for(model), run, ids)
    return model, report


# ---------------------------------------------------------------------------------------------- pure maths
def test_hard_mask_at_target_init_equals_uniform_rowwise_wanda():
    torch.manual_seed(0)
    for cols, s in [(64, 0.7), (576, 0.7), (100, 0.5), (1536, 0.6), (33, 0.8)]:
        score = torch.rand(17, cols)
        rank = T.descending_ranks(score)
        keep = T.hard_keep(rank, torch.full((17,), s))
        assert torch.equal(~keep, prune_lowest_per_row(score, s)), (cols, s)
        assert torch.equal(T.row_zero_counts(torch.full((17,), s), cols), (~keep).sum(1))


def test_rank_fractions_are_the_reference_ecdf_without_ties():
    score = torch.rand(5, 40)
    ecdf = ((score.unsqueeze(-1) - score.unsqueeze(-2)) >= 0).float().mean(-1)     # wanda/lib/prune.py:prune_score
    assert torch.allclose(T.rank_fractions(T.descending_ranks(score)), ecdf)


def test_ste_count_matches_the_reference_dense_form():
    torch.manual_seed(1)
    rank = T.descending_ranks(torch.rand(9, 50))
    t1 = torch.rand(9, requires_grad=True)
    t2 = t1.detach().clone().requires_grad_(True)
    fast, dense = T.kept_count_ste(t1, 50), T.kept_count_ste_dense(rank, t2)
    assert float(fast.detach()) == float(dense.detach())
    fast.backward()
    dense.backward()
    assert torch.allclose(t1.grad, t2.grad, rtol=1e-5, atol=1e-6)
    assert (t1.grad < 0).all()                  # a higher threshold keeps fewer weights


def test_regulariser_pulls_kept_ratio_to_target():
    """Only λ·|log(R/ρ)|: from the code's 0.5 start (R = 0.5) AdamW drives R to ρ = 0.3 and holds it there."""
    layers = [T.MaskedLayer(f"l{i}", torch.nn.Linear(c, r), torch.nn.Parameter(torch.full((r,), 0.5)),
                            T.descending_ranks(torch.rand(r, c))) for i, (r, c) in enumerate([(32, 64), (48, 128)])]
    params = [l.thresholds for l in layers]
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.05)
    start = float(T.kept_ratio(layers).detach())
    for _ in range(150):
        loss = 16.0 * T.log_ratio_penalty(T.kept_ratio(layers), 0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float(T.kept_ratio(layers).detach())
    assert abs(start - 0.5) < 0.02 and abs(end - 0.3) < 0.02, (start, end)
    assert float(T.log_ratio_penalty(torch.tensor(0.6), 0.3)) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert float(T.log_ratio_penalty(torch.tensor(0.15), 0.3)) == pytest.approx(float(torch.log(torch.tensor(2.0))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_budget_and_builder_keep_counts(seed):
    g = torch.Generator().manual_seed(seed)
    cols = [64, 576, 1536, 3, 11008]
    ts = [torch.rand(int(torch.randint(1, 40, (1,), generator=g)), generator=g) for _ in cols]
    total = sum(t.numel() * c for t, c in zip(ts, cols))
    for target in (0, total // 3, int(total * 0.7), total):
        zeros = T.exact_budget_zero_counts(ts, cols, target)
        assert sum(int(z.sum()) for z in zeros) == target
        for z, c in zip(zeros, cols):
            s = T.row_sparsity_for_keep_builder(z, c)
            assert ((s >= 0) & (s <= 1)).all()
            kept = (~keep_highest_per_row(torch.rand(z.numel(), c, generator=g), s)).sum(1)
            assert torch.equal(kept, c - z)
    # equal thresholds in many rows (a tie of several rows at the jump) still land exactly
    tied = [torch.full((50,), 0.3)]
    assert int(T.exact_budget_zero_counts(tied, [10], 151)[0].sum()) == 151


def test_builder_sparsity_is_exact_for_all_small_widths():
    for c in range(1, 300):
        z = torch.arange(c + 1)
        s = T.row_sparsity_for_keep_builder(z, c)
        assert torch.equal(torch.floor((1 - s) * c).long(), c - z)


# ---------------------------------------------------------------------------------------------- with a model
def test_gradients_reach_thresholds_not_weights(tiny_llama):
    model, _ = tiny_llama
    model = copy.deepcopy(model)
    adapter = adapter_for(model)
    linears = adapter.all_linears(model)
    before = {n: l.weight.detach().clone() for n, l in linears.items()}
    layers = [T.MaskedLayer(n, l, torch.nn.Parameter(torch.full((l.out_features,), 0.5)),
                            T.descending_ranks(l.weight.detach().abs())) for n, l in linears.items()]
    ids = _calib(1, 32)
    with T.soft_masked(layers, "soft", model):
        assert all(not l.linear.parametrizations.weight.original.requires_grad for l in layers)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert trainable == {id(l.thresholds) for l in layers}
        logits = model(ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss.backward()
        for l in layers:
            assert l.linear.parametrizations.weight.original.grad is None
            assert l.thresholds.grad is not None and torch.isfinite(l.thresholds.grad).all()
    assert sum(int((l.thresholds.grad != 0).sum()) for l in layers) > 0.5 * sum(l.thresholds.numel() for l in layers)
    for n, l in linears.items():                  # parametrization removed, original weights back
        assert not hasattr(l, "parametrizations") and torch.equal(l.weight, before[n])
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_untrained_lua_prunes_exactly_like_uniform_wanda(tiny_llama, results_dir):
    """lr → 0: the thresholds stay at the target, so the pruned model is uniform row-wise Wanda, bit for bit."""
    model, _ = tiny_llama
    ids = _calib()
    common = FAST + ("sparsity=0.7", "engine.propagate=dense", f"paths.results={results_dir}")
    wanda, _ = _prune(model, compose_run(*common, "allocation=uniform"), ids)
    lua, report = _prune(model, compose_run(*common, *LUA, "allocation.iterations=1",
                                            "allocation.lr=1e-12", "allocation.weight_decay=0"), ids)
    for (n, a), (_, b) in zip(wanda.named_parameters(), lua.named_parameters()):
        assert torch.equal(a, b), n
    assert report["allocation_report"]["learned_zeros"] == report["allocation_report"]["target_zeros"]


def test_trained_lua_hits_budget_and_saves_masks(tiny_llama, results_dir):
    model, _ = tiny_llama
    ids = _calib()
    run = compose_run(*FAST, *LUA, "sparsity=0.6", "engine.propagate=dense",
                      "allocation.iterations=3", "allocation.lr=0.05", "allocation.init=code",
                      "allocation.plot=true", "allocation.batch_size=1", f"paths.results={results_dir}")
    pruned, report = _prune(model, run, ids)
    rep = report["allocation_report"]
    adapter = adapter_for(pruned)
    linears = adapter.all_linears(pruned)
    zeros = sum(int((l.weight == 0).sum()) for l in linears.values())
    assert zeros == rep["target_zeros"] == sum(l.out_features * int(l.in_features * 0.6) for l in linears.values())
    assert rep["learned_zeros"] != rep["target_zeros"]          # init=code starts at 0.5: the shift did work
    layer_sparsity = measure_sparsity(pruned, adapter)["per_layer"]
    assert len(set(round(v, 6) for v in layer_sparsity.values())) > 1     # a non-uniform allocation was learned
    masks = torch.load(rep["artefacts"]["masks"])
    thresholds = torch.load(rep["artefacts"]["thresholds"])
    for name, lin in linears.items():             # propagate=dense + wanda: the applied mask is the learned one
        assert torch.equal(unpack_mask(masks[name]), lin.weight != 0), name
        assert torch.equal(thresholds[name]["zeros_per_row"].long(), (lin.weight == 0).sum(1))
    assert rep["artefacts"]["plot"].endswith(".png")
    assert rep["iterations_done"] == 3 and rep["seconds_per_iteration"] > 0


def test_nan_loss_stops_and_keeps_last_good_thresholds(tiny_llama, results_dir):
    model, _ = tiny_llama
    model = copy.deepcopy(model)
    calls = {"n": 0}

    def poison(module, args, out):                # the 3rd forward (iteration 2) produces NaN logits
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 3 else out

    handle = model.lm_head.register_forward_hook(poison)
    run = compose_run(*FAST, *LUA, "sparsity=0.6", "allocation.iterations=5", "allocation.lr=0.05",
                      "allocation.save_masks=false", f"paths.results={results_dir}")
    try:
        _, report = _prune(model, run, _calib())
    finally:
        handle.remove()
    rep = report["allocation_report"]
    assert rep["stopped"]["iteration"] == 2 and rep["iterations_done"] == 2
    history = rep["artefacts"]["history"]
    assert history.endswith("history.json")
    learned = torch.load(rep["artefacts"]["thresholds"])
    assert all(torch.isfinite(v["learned"]).all() for v in learned.values())


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("override,field", [("allocation.lr=0", "allocation.lr"),
                                            ("allocation.lr=-1e-3", "allocation.lr"),
                                            ("allocation.iterations=0", "allocation.iterations"),
                                            ("allocation.init=zero", "allocation.init")])
def test_bad_hyperparameters_fail_at_config_time(override, field):
    with pytest.raises(ConfigError) as e:
        compose_run("allocation=lua_llm", "score=wanda", override)
    assert e.value.field_name == field


@pytest.mark.parametrize("override,field", [("sparsity=0.01", "sparsity"),
                                            ("allocation.memory_budget_gb=0.0001", "allocation.memory_budget_gb")])
def test_bad_targets_fail_before_training(tiny_llama, results_dir, override, field):
    model, _ = tiny_llama
    run = compose_run(*FAST, *LUA, override, f"paths.results={results_dir}")
    allocator = build("allocation", run.allocation)
    ctx = AllocationContext(model, adapter_for(model), run, build("score", run.score), _calib(), {})
    with pytest.raises(ConfigError) as e:
        allocator.allocate(ctx)
    assert e.value.field_name == field
    assert all(not hasattr(l, "parametrizations") for l in adapter_for(model).all_linears(model).values())


# ---------------------------------------------------------------------------------------------- experiment files
@pytest.mark.parametrize("table", ["table1", "table2", "speed"])
def test_experiment_files_compose_with_their_protocol(table):
    from hydra import compose, initialize_config_dir

    from repro.run import CONF_DIR

    run = compose_run(f"experiment=lua_llm/{table}", "model=smollm2-135m")
    assert run.experiment.paper == "lua_llm" and run.experiment.table == table
    assert run.model.seqlen == 2048 and run.calib.name == "c4" and run.score.name == "wanda"
    assert run.eval.ppl.datasets == ["wikitext2"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=lua_llm/{table}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert "lua_llm" in params["allocation"] and "uniform" in params["allocation"]


def test_memory_plan_fits_7b_on_80gb_only_with_checkpointing():
    n_prunable = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    args = (n_prunable + 2 * 32000 * 4096, n_prunable, 2, 2, 32 * (5 * 4096 + 2 * 11008), 11008 * 4096, 2048, 1,
            4096, 32000, 32)
    assert T.memory_plan(*args, checkpointing=True)["total"] < 80 < T.memory_plan(*args, checkpointing=False)["total"]


def test_training_windows_continue_the_calibration_sequence(tiny_llama, results_dir):
    """train_windows=N draws N more windows after the calibration ones (same source and seed)."""
    from repro.data.calibration import load_calibration

    model, tokenizer = tiny_llama
    run = compose_run(*FAST, *LUA, "allocation.train_windows=3", "allocation.iterations=2", "sparsity=0.5",
                      "allocation.save_masks=false", f"paths.results={results_dir}")
    calib = load_calibration(run.calib, tokenizer, 32)
    _, report = _prune(model, run, calib.input_ids)
    assert report["allocation_report"]["train_windows_source"] == "local_text windows 4..6"
    assert report["allocation_report"]["effective_batch"] == 2     # default: the paper's 2 GPUs x 1 window


@pytest.mark.parametrize("score", ["wanda", "sparsegpt"])
def test_learned_masks_are_applied_exactly_with_pruned_propagation(tiny_llama, results_dir, score):
    """The pipeline applies the learned hard masks themselves (fixed-mask targets), not re-scored per-row counts:
    with the default `engine.propagate=pruned` blocks > 0 see pruned-model statistics, yet every zero is where
    Lua-LLM put it (SparseGPT only updates the kept weights around them)."""
    model, _ = tiny_llama
    run = compose_run(*FAST, *LUA, f"score={score}", "sparsity=0.6", "engine.propagate=pruned",
                      "allocation.iterations=3", "allocation.lr=0.05", f"paths.results={results_dir}")
    pruned, report = _prune(model, run, _calib())
    rep = report["allocation_report"]
    assert rep["applied_masks_equal_learned"] is True
    masks = torch.load(rep["artefacts"]["masks"])
    for name, lin in adapter_for(pruned).all_linears(pruned).items():
        assert torch.equal(unpack_mask(masks[name]), lin.weight != 0), name
