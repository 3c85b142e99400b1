"""ATP (repro/allocation/atp.py) against the reference's own statements (tests/golden/atp_reference.json, written by
tools/golden/atp_reference.py from wzhuang-xmu/ATP 56b8437), the invariants, the search and the bad-input errors."""
import copy
import json
from pathlib import Path

import pytest
import torch

from repro.allocation._ratio_maps import check_layer_ratios
from repro.allocation.atp import atp_sparsities, beta_bound, beta_grid
from repro.config import ConfigError
from repro.methods.base import AllocationContext
from repro.models.adapter import adapter_for
from repro.registry import build
from tests.conftest import compose_run

GOLDEN = json.loads((Path(__file__).parent / "golden" / "atp_reference.json").read_text())["cases"]
FAST = ("model=tiny-llama", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=4", "model.seqlen=32")


@pytest.mark.parametrize("case", [c for c in GOLDEN if "rates" in c],
                         ids=lambda c: f"L{c['nlayers']}-s{c['sparsity']}-b{c['beta']}")
def test_rule_and_legality_match_reference(case):
    L, s, b = case["nlayers"], case["sparsity"], case["beta"]
    assert atp_sparsities(L, s, b) == pytest.approx(case["rates"], abs=1e-12)
    assert (b <= beta_bound(L, s) + 1e-12) == case["legal"]


@pytest.mark.parametrize("case", [c for c in GOLDEN if "search_betas" in c],
                         ids=lambda c: f"L{c['nlayers']}-s{c['sparsity']}")
def test_search_grid_matches_search_sh(case):
    assert beta_grid(case["nlayers"], case["sparsity"], 0.002) == pytest.approx(case["search_betas"])


@pytest.mark.parametrize("L,s", [(30, 0.7), (32, 0.5), (40, 0.8)])
def test_invariants(L, s):
    for beta in beta_grid(L, s, 0.002):
        r = atp_sparsities(L, s, beta)
        assert sum(r) / L == pytest.approx(s, abs=1e-9)
        assert all(0 <= x < 1 for x in r)
        assert all(b - a == pytest.approx(beta) for a, b in zip(r, r[1:]))     # increasing with depth


def test_check_layer_ratios_errors():
    with pytest.raises(ConfigError, match=r"outside \[0, 1\).*#1: 1.000000"):
        check_layer_ratios("allocation.beta", 0.3, [0.4, 1.0], 0.7, "a legal step")
    with pytest.raises(ConfigError, match="misses the target 0.7"):
        check_layer_ratios("allocation.beta", 0.1, [0.6, 0.7001], 0.7, "a legal step")
    check_layer_ratios("allocation.beta", 0.1, [0.6, 0.8], 0.7, "a legal step")


def _ctx(model, *overrides):
    run = compose_run(*FAST, "allocation=atp", "score=wanda", "sparsity=0.7", *overrides)
    m = copy.deepcopy(model)
    ids = torch.randint(3, 259, (4, 32), generator=torch.Generator().manual_seed(0))
    report = {}
    return m, AllocationContext(m, adapter_for(m), run, build("score", run.score), ids, report), report, run


def test_illegal_fixed_beta_is_a_config_error(tiny_llama):
    m, ctx, _, run = _ctx(tiny_llama[0], "allocation.beta=0.7")
    with pytest.raises(ConfigError, match="allocation.beta.*Illegal beta"):
        build("allocation", run.allocation).allocate(ctx)


def test_search_picks_lowest_ppl_and_restores_weights(tiny_llama):
    m, ctx, report, run = _ctx(tiny_llama[0], "allocation.beta_step=0.2", "eval.ppl.max_windows=2",
                               "data.wikitext2.local_path=${repro_asset:wikitext2-test-head.txt}")
    before = {n: l.weight.clone() for n, l in adapter_for(m).all_linears(m).items()}
    targets = build("allocation", run.allocation).allocate(ctx)
    search = report["search"]
    L = len(adapter_for(m).blocks(m))
    assert search["betas"] == beta_grid(L, 0.7, 0.2) and len(search["ppl"]) == len(search["betas"])
    assert report["beta"] == search["betas"][search["ppl"].index(min(search["ppl"]))]
    assert all(torch.equal(before[n], l.weight) for n, l in adapter_for(m).all_linears(m).items())
    assert sorted(set(targets.values())) == pytest.approx(sorted(atp_sparsities(L, 0.7, report["beta"])))


@pytest.mark.parametrize("score,extra", [("magnitude", ()), ("sparsegpt", ())])
def test_composes_with_other_scores(tiny_llama, score, extra):
    from repro.prune.pipeline import measure_sparsity, prune_model

    model, _ = tiny_llama
    run = compose_run(*FAST, "allocation=atp", f"score={score}", *extra, "sparsity=0.7", "allocation.beta=0.2")
    m = copy.deepcopy(model)
    ids = torch.randint(3, 259, (4, 32), generator=torch.Generator().manual_seed(0))
    report = prune_model(m, adapter_for(m), run, ids)
    assert report["allocation_report"]["block_sparsity"] == pytest.approx([0.6, 0.8])
    assert measure_sparsity(m, adapter_for(m))["overall"] == pytest.approx(0.7, abs=0.03)
