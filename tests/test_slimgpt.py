"""SlimGPT (repro/methods/slimgpt.py) and the physically smaller model (repro/prune/structured.py)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from repro.config import ConfigError
from repro.methods.slimgpt import SlimGPTConfig, layer_ratios, ratio_bounds, struct_prune
from repro.models.adapter import adapter_for
from repro.prune import structured
from tests.conftest import compose_run


def _layer(rows=24, cols=32, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols) + torch.eye(cols)   # correlated inputs
    X = mix @ torch.randn(cols, n, generator=g)
    W = torch.randn(rows, cols, generator=g)
    return W, X, (2.0 / n) * X @ X.T


def _err(W, W2, X):
    return float(((W - W2) @ X).square().sum())


@pytest.mark.parametrize("group", [1, 8])
def test_obs_update_is_the_least_squares_optimum_and_beats_plain_removal(group):
    W, X, H = _layer()
    W2, removed = struct_prune(W, H, 0.5, group=group)
    assert int(removed.sum()) == 16 and bool((W2[:, removed] == 0).all())
    if group > 1:                                     # whole groups go
        groups = removed.view(-1, group)
        assert bool((groups.all(1) | (~groups).all(1)).all())
    keep = ~removed
    optimum = torch.zeros_like(W)                     # min ‖(W − W')X‖ with W'[:, removed] = 0
    optimum[:, keep] = W @ H[:, keep] @ torch.linalg.inv(H[keep][:, keep])
    torch.testing.assert_close(W2, optimum, rtol=1e-3, atol=1e-3)
    plain = W.clone()
    plain[:, removed] = 0
    assert _err(W, W2, X) < 0.9 * _err(W, plain, X)
    W3, _ = struct_prune(W, H, 0.5, group=group, compensate=False)
    assert bool((W3[:, ~_] == W[:, ~_]).all())        # no update of the kept columns without compensation


def test_ffn_dynamic_group_size_removes_exactly_the_target():
    W, X, H = _layer(rows=8, cols=700, n=1500)
    _, removed = struct_prune(W, H, 0.9, group=1)     # 630 columns: rounds of max((630-512)//2, 64) = 64, ...
    assert int(removed.sum()) == 630


def test_ratio_schedule_values():
    lo, hi = ratio_bounds(SlimGPTConfig(), 0.2)
    assert (lo, hi) == pytest.approx((0.0625, 0.25))   # the reference README's 20% command
    r = layer_ratios("log_increase", 32, lo, hi)
    assert r[0] == pytest.approx(0.0625) and r[-1] == pytest.approx(0.25)
    assert r[1] == pytest.approx(0.0625 + 0.1875 * math.log(2) / math.log(32))
    assert sum(r) / 32 == pytest.approx(0.2004, abs=1e-4)
    assert layer_ratios("log_decrease", 32, lo, hi) == r[::-1]
    r30 = layer_ratios("log_increase", 30, lo, hi)        # ln(32) stays the denominator (the reference's constant)
    assert r30[-1] == pytest.approx(0.0625 + 0.1875 * math.log(30) / math.log(32))
    lin = layer_ratios("linear_increase", 5, 0.1, 0.3)
    assert lin == pytest.approx([0.1, 0.15, 0.2, 0.25, 0.3])
    assert ratio_bounds(SlimGPTConfig(min_ratio=0.1, max_ratio=0.3), 0.2) == (0.1, 0.3)


def _prune_tiny(tiny_llama, *overrides):
    from repro.prune.pipeline import prune_model

    model, tok = tiny_llama
    model = copy.deepcopy(model)
    run = compose_run("model=tiny-llama", "score=slimgpt", "pattern=structured", *overrides)
    ids = torch.randint(0, 255, (8, 64), generator=torch.Generator().manual_seed(0))
    changed: set = set()
    report = prune_model(model, adapter_for(model), run, ids, changed)
    return model, report, changed


def test_smaller_model_gives_the_zeroed_models_logits_and_reloads(tiny_llama, tmp_path):
    model, report, changed = _prune_tiny(tiny_llama, "sparsity=0.5", "score.min_ratio=0.5", "score.max_ratio=0.5")
    adapter = adapter_for(model)
    s = report["structured"]
    assert s["layer_kv_head_num"] == [1, 1] and s["layer_head_num"] == [2, 2]     # 4 heads, 2 GQA groups: one left
    assert s["layer_inter_size"] == [64, 64]
    assert changed == {f"model.layers.{i}.{n}" for i in range(2) for n in ("self_attn.o_proj", "mlp.down_proj")}
    q = adapter.linears(adapter.blocks(model)[0])["self_attn.q_proj"].weight
    assert int((q.abs().sum(1) == 0).sum()) == 32                                 # the group's query rows are zero
    ids = torch.randint(0, 255, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        zeroed = model(ids).logits
        small = copy.deepcopy(model)
        shapes = structured.slim_model(small, adapter)
        slim = small(ids).logits
    torch.testing.assert_close(slim, zeroed, rtol=1e-5, atol=1e-5)
    assert shapes["layer_inter_size"] == [64, 64]
    assert sum(p.numel() for p in small.parameters()) == s["params_after"] < s["params_before"]
    structured.save_slim(small, tmp_path / "slim")
    reloaded = structured.load_slim(tmp_path / "slim")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, zeroed, rtol=1e-5, atol=1e-5)


def test_zeroed_model_survives_the_store(tiny_llama, tmp_path):
    from repro import store

    model, report, changed = _prune_tiny(tiny_llama, "sparsity=0.5", "score.min_ratio=0.5", "score.max_ratio=0.5")
    adapter = adapter_for(model)
    store.save(model, adapter, tmp_path / "p", report, changed)
    fresh = copy.deepcopy(tiny_llama[0])
    assert store.load(fresh, adapter, tmp_path / "p") is not None
    for (n, a), b in zip(adapter.all_linears(model).items(), adapter.all_linears(fresh).values()):
        assert torch.equal(a.weight, b.weight), n


def test_bad_input_is_refused_before_the_model_loads(tiny_llama):
    from repro.run import preflight

    with pytest.raises(ConfigError, match=r"`pattern` = 'structured'.*slimgpt"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", "pattern=structured"))
    with pytest.raises(ConfigError, match=r"`pattern` = '2:4'.*structured"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=slimgpt", "pattern=nm_2_4"))
    with pytest.raises(ConfigError, match=r"`sparsity` = 0.85"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=slimgpt", "pattern=structured",
                              "sparsity=0.85"))
    with pytest.raises(ConfigError, match=r"`score.schedule` = 'cubic'.*log_increase"):
        compose_run("score=slimgpt", "pattern=structured", "score.schedule=cubic")
    with pytest.raises(ConfigError, match=r"`allocation` = 'owl'"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=slimgpt", "pattern=structured",
                              "allocation=owl"))
    with pytest.raises(ConfigError, match=r"`score.max_ratio` = 0.9.*at least one of the 2 head groups"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=slimgpt", "pattern=structured",
                              "score.min_ratio=0.9", "score.max_ratio=0.9"))     # known before loading
    with pytest.raises(ConfigError, match=r"`score.max_ratio` = 0.9.*at least one of the 2 head groups"):
        _prune_tiny(tiny_llama, "sparsity=0.5", "score.min_ratio=0.9", "score.max_ratio=0.9")   # and after
