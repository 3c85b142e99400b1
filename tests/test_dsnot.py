"""DSnoT: swaps keep every row's sparsity, reduce the reconstruction error, honour the skip rule and statistics."""
import copy

import pytest
import torch

from repro.config import ConfigError
from repro.methods.dsnot import dsnot_refine, relative_name
from repro.models.adapter import adapter_for
from repro.prune.masks import build_mask
from repro.prune.pipeline import prune_model
from repro.prune.stats import LayerStats
from repro.registry import validate_method_node
from tests.conftest import compose_run

FAST = ("model=tiny-llama", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=2", "model.seqlen=32",
        "sparsity=0.6")


def _case(rows=16, cols=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mean = torch.randn(cols, generator=g)
    var = torch.rand(cols, generator=g) + 0.1
    wanda = w.abs() * (torch.rand(cols, generator=g) + 0.5)
    return w * mean, wanda, var


def _error(mask, contribution):
    return torch.where(mask, contribution, torch.zeros_like(contribution)).sum(dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swaps_keep_row_sparsity_and_reduce_the_error(seed):
    contribution, wanda, var = _case(seed=seed)
    initial = build_mask(wanda, 0.6, None, "row")
    refined = dsnot_refine(initial, contribution, wanda, var, max_cycles=50, threshold=0.1, pow_var=1.0,
                           same_sign=False)
    assert torch.equal(refined.sum(dim=1), initial.sum(dim=1))           # row sparsity constant
    assert not torch.equal(refined, initial)                              # it did swap
    assert _error(refined, contribution).abs().sum() < _error(initial, contribution).abs().sum()


def test_per_row_targets_keep_each_rows_own_count():
    contribution, wanda, var = _case(rows=8, cols=40)
    target = torch.linspace(0.3, 0.9, 8, dtype=torch.float64)
    initial = build_mask(wanda, target, None, "row")
    refined = dsnot_refine(initial, contribution, wanda, var, 50, 0.1, 1.0, False)
    assert torch.equal(refined.sum(dim=1), initial.sum(dim=1))


def test_threshold_and_cycles_stop_the_updates():
    contribution, wanda, var = _case()
    initial = build_mask(wanda, 0.6, None, "row")
    assert torch.equal(dsnot_refine(initial, contribution, wanda, var, 50, 1e9, 1.0, False), initial)
    assert torch.equal(dsnot_refine(initial, contribution, wanda, var, 0, 0.1, 1.0, False), initial)
    one = dsnot_refine(initial, contribution, wanda, var, 1, 0.0, 1.0, False)
    assert int((one != initial).sum()) == 2 * initial.shape[0]           # one swap per row per cycle


def test_same_sign_check_never_flips_the_error_sign():
    contribution, wanda, var = _case(seed=3)
    initial = build_mask(wanda, 0.6, None, "row")
    refined = dsnot_refine(initial, contribution, wanda, var, 50, 0.0, 1.0, same_sign=True)
    before, after = _error(initial, contribution), _error(refined, contribution)
    assert torch.all((torch.sign(before) == torch.sign(after)) | (after == 0))


def test_seq_var_is_the_mean_of_per_sequence_token_variances():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 5)
    st = LayerStats(["seq_var"])
    st.add(x[:2].reshape(-1, 5), nseq=2)
    st.add(x[2:].reshape(-1, 5), nseq=1)
    expected = torch.stack([torch.var(x[i], dim=0, unbiased=False) for i in range(3)]).mean(dim=0)
    assert torch.allclose(st["seq_var"], expected, atol=1e-6)


def test_relative_names_and_skip_rule():
    assert relative_name("model.layers.12.mlp.down_proj") == "mlp.down_proj"
    assert relative_name("model.decoder.layers.0.fc1") == "fc1"
    from repro.methods.dsnot import DSnoT

    opt = DSnoT(validate_method_node("score", {"name": "dsnot", "skip_layer": "fc"}))
    assert opt.skipped("model.decoder.layers.0.fc2") and not opt.skipped("model.decoder.layers.0.self_attn.q_proj")


def test_bad_initial_method_is_a_config_error():
    with pytest.raises(ConfigError, match="initial_method"):
        compose_run("score=dsnot", "score.initial_method=owl")


def test_dsnot_on_tiny_llama_refines_attention_and_skips_mlp(tiny_llama):
    model, _ = tiny_llama
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 259, (4, 32), generator=g)
    pruned = {}
    for score in ("wanda", "dsnot"):
        m = copy.deepcopy(model)
        prune_model(m, adapter_for(m), compose_run(*FAST, f"score={score}"), ids)
        pruned[score] = {n: lin.weight == 0 for n, lin in adapter_for(m).all_linears(m).items()}
    changed = 0
    for name, mask in pruned["dsnot"].items():
        assert torch.equal(mask.sum(dim=1), pruned["wanda"][name].sum(dim=1)), name   # same row sparsity
        if name.startswith("model.layers.0.mlp."):      # skipped (later blocks see other, refined inputs)
            assert torch.equal(mask, pruned["wanda"][name]), name
        elif ".self_attn." in name:
            changed += int(not torch.equal(mask, pruned["wanda"][name]))
    assert changed > 0
