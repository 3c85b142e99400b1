"""LoFiT (repro/recovery/lofit.py): head ranking, the per-head edit, the bias fold, preflight, a tiny run."""
from __future__ import annotations

import pytest
import torch

from repro.config import ConfigError
from repro.recovery.lofit import HeadEdit, edits_on, fold_biases, head_count, top_heads
from tests.conftest import compose_run


def test_top_heads_ranks_globally_across_layers():
    scores = [torch.tensor([0.1, 0.9, 0.3, 0.3]), torch.tensor([0.5, 0.0, 0.8, 0.3])]
    assert top_heads(scores, 3) == {0: [1], 1: [0, 2]}
    assert top_heads(scores, 5) == {0: [1, 2], 1: [0, 2, 3]} or top_heads(scores, 5) == {0: [1, 2, 3], 1: [0, 2]}
    assert sum(map(len, top_heads(scores, 8).values())) == 8
    assert head_count(0.1, 64) == 6
    with pytest.raises(ConfigError, match="recovery.heads"):
        head_count(0.01, 64)


def test_head_edit_scales_every_head_and_biases_only_the_selected():
    x = torch.randn(2, 3, 4 * 5)
    scale = HeadEdit(4, 5)
    with torch.no_grad():
        scale.scale.zero_()
        scale.scale[2] = 1.0
    y = scale(x).view(2, 3, 4, 5)
    xs = x.view(2, 3, 4, 5)
    assert torch.equal(y[:, :, [0, 1, 3]], xs[:, :, [0, 1, 3]]) and torch.allclose(y[:, :, 2], 2 * xs[:, :, 2])
    bias = HeadEdit(4, 5, heads=[1, 3])
    d = (bias(x) - x).view(2, 3, 4, 5)
    assert torch.equal(d[:, :, [0, 2]], torch.zeros(2, 3, 2, 5))
    assert torch.allclose(d[:, :, 1], bias.bias[0].expand(2, 3, 5), atol=1e-6)
    assert torch.allclose(d[:, :, 3], bias.bias[1].expand(2, 3, 5), atol=1e-6)


@torch.no_grad()
def test_folded_bias_equals_the_runtime_edit_and_keeps_the_zeros():
    from repro.models.loading import load_model
    model, _ = load_model(compose_run("model=tiny-llama").model)
    for layer in model.model.layers:
        w = layer.self_attn.o_proj.weight
        w[torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.5] = 0
    zeros = [int((layer.self_attn.o_proj.weight == 0).sum()) for layer in model.model.layers]
    ids = torch.randint(0, 259, (2, 16), generator=torch.Generator().manual_seed(1))
    edits = {0: HeadEdit(4, 16, [1, 2], std=0.5), 1: HeadEdit(4, 16, [3], std=0.5)}
    with edits_on(model, edits):
        edited = model(ids).logits
    plain = model(ids).logits                                        # hooks gone after the context
    fold_biases(model, {i: (e.heads.tolist(), e.bias) for i, e in edits.items()})
    folded = model(ids).logits
    assert (edited - plain).abs().max() > 1e-3
    assert torch.allclose(folded, edited, atol=1e-5, rtol=1e-4)
    assert zeros == [int((layer.self_attn.o_proj.weight == 0).sum()) for layer in model.model.layers]


@pytest.mark.parametrize("override", ["recovery.heads=0", "recovery.heads=1.5", "recovery.heads=0.05"])
def test_bad_lofit_input_fails_preflight(override):
    from repro.run import preflight
    with pytest.raises(ConfigError, match="recovery.heads"):     # tiny-llama: 2 layers × 4 heads; 5% is no head
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", "recovery=lofit", override))


def test_lofit_run_selects_by_scale_norm_folds_and_reuses(results_dir):
    from repro.run import execute
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=lofit", "recovery.heads=0.25",
            "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=2", "recovery_budget.data.max_length=500",
            f"paths.results={results_dir}")
    rec = execute(compose_run(*args))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["heads_total"] == 8 and len(r["selected"]) == 2 == r["heads_selected"]
    assert r["selection"]["steps"] == 2 and r["training"]["steps"] == 2 and r["trainable_params"] == 2 * 16
    assert r["selection"]["trainable_params"] == 8 * 16
    assert abs(rec["sparsity_after_recovery"]["overall"] - rec["sparsity"]["overall"]) < 1e-9
    again = execute(compose_run(*args, "force=true"))
    assert again["recovery"]["reused_biases"] is True and again["metrics"]["ppl"] == rec["metrics"]["ppl"]
