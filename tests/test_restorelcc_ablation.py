"""RestoreLCC Table 4 ablation axes: recovery.head_selection (probe|random|mse|kl) and recovery.compensation
(full|no_bias|bias_only) — repro/recovery/lcc_select.py, lcc_math.py, restorelcc.py."""
from pathlib import Path

import pytest
import torch
from scipy.special import rel_entr, softmax

from conftest import compose_run
from repro.config import ConfigError
from repro.recovery.lcc_math import kl_scores, mse_scores, random_scores, select_heads
from repro.recovery.restorelcc import HeadCompensation
from test_restorelcc import TINY


def _comp(form, heads=(0, 2), d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.linalg.qr(torch.randn(len(heads), d, d, dtype=torch.float64))[0].float()
    return HeadCompensation(list(heads), v, 4, 0.5, g, form, d), v


def test_compensation_forms_train_only_their_terms():
    full, v = _comp("full")
    assert sorted(n for n, _ in full.named_parameters()) == ["b", "beta"]
    assert torch.allclose(full.comps(), torch.einsum("hij,hi->hj", v, full.beta) + full.b)
    no_bias, v = _comp("no_bias")
    assert [n for n, _ in no_bias.named_parameters()] == ["beta"] and no_bias.b is None
    assert torch.allclose(no_bias.comps(), torch.einsum("hij,hi->hj", v, no_bias.beta))
    bias_only, _ = _comp("bias_only")
    assert [n for n, _ in bias_only.named_parameters()] == ["b"] and bias_only.beta is None and bias_only.v is None
    assert torch.equal(bias_only.comps(), bias_only.b)             # no V^T beta term at all
    bias_only.comps().sum().backward()
    assert torch.equal(bias_only.b.grad, torch.ones_like(bias_only.b))
    vec = bias_only.vector().reshape(4, 8)                         # heads 1, 3 not selected: zero
    assert vec[[1, 3]].abs().sum() == 0 and torch.equal(vec[[0, 2]], bias_only.b.detach())


def test_mse_and_kl_rankings_equal_brute_force():
    g = torch.Generator().manual_seed(3)
    n, layers, heads, d = 6, 3, 5, 4
    zd = torch.randn(n, layers, heads, d, generator=g)
    zp = zd * torch.rand(1, layers, heads, 1, generator=g) + 0.3 * torch.randn(n, layers, heads, d, generator=g)
    mse_bf, kl_bf = torch.empty(layers, heads), torch.empty(layers, heads)
    for i in range(layers):
        for h in range(heads):
            mse_bf[i, h] = sum(float(((zd[s, i, h] - zp[s, i, h]) ** 2).sum()) for s in range(n)) / (n * d)
            kl_bf[i, h] = sum(rel_entr(softmax(zd[s, i, h].double().numpy()),
                                       softmax(zp[s, i, h].double().numpy())).sum() for s in range(n)) / n
    assert torch.allclose(mse_scores(zd, zp).float(), mse_bf, rtol=1e-5)
    assert torch.allclose(kl_scores(zd, zp).float(), kl_bf, rtol=1e-5)
    brute = sorted(range(layers * heads), key=lambda f: -float(mse_bf.flatten()[f]))[:4]
    assert select_heads(mse_scores(zd, zp), 4) == brute
    live = torch.ones(layers, heads, dtype=torch.bool)
    live[0] = False                                                # removed heads are never picked
    assert all(f >= heads for f in select_heads(kl_scores(zd, zp), 10, live))


def test_random_selection_is_seeded():
    live = torch.ones(4, 6, dtype=torch.bool)
    a = select_heads(random_scores(live.shape, 42), 8, live)
    assert a == select_heads(random_scores(live.shape, 42), 8, live)
    assert a != select_heads(random_scores(live.shape, 43), 8, live)
    assert a != list(range(8)) and len(set(a)) == 8


def test_tiny_ablation_runs_reuse_the_probe_cache(results_dir):
    from repro.run import execute

    run = lambda *o: execute(compose_run(*TINY, f"paths.results={results_dir}", *o))["recovery"]   # noqa: E731
    cache = Path(results_dir) / "restorelcc_probe"
    bias_only = run("recovery.head_selection=random", "recovery.compensation=bias_only")
    assert bias_only["head_selection"] == "random" and bias_only["compensation_form"] == "bias_only"
    assert bias_only["trainable_params"] == 4 * 16 and "probe" not in bias_only
    assert not cache.exists()                                      # random + bias only: nothing captured
    probe = run()
    assert probe["head_selection"] == "probe" and probe["probe"]["reused"] is False
    assert len(list(cache.glob("*/stats.pt"))) == 1                # the probe run stores the activation stats too
    mse = run("recovery.head_selection=mse", "recovery.compensation=no_bias")
    assert mse["stats"]["reused"] is True and mse["trainable_params"] == 4 * 16 and "probe" not in mse
    assert bias_only["selected"] != probe["selected"]             # the seeded draw is not the probe's ranking


@pytest.mark.parametrize("override, field, choices", [
    ("recovery.head_selection=oracle", "recovery.head_selection", "'kl', 'mse', 'probe', 'random'"),
    ("recovery.compensation=beta_only", "recovery.compensation", "'bias_only', 'full', 'no_bias'"),
])
def test_bad_ablation_values_are_refused_before_loading(override, field, choices):
    from repro.run import preflight
    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*TINY, override))
    assert e.value.field_name == field and choices in str(e.value) and override.split("=")[1] in str(e.value)
