"""Every allocator composes with every scorer through the real config; NeuronAL's search on tiny models."""
import copy

import pytest
import torch

from repro.allocation._ratio_maps import first_argmin, linear_ramp_sparsities
from repro.config import ConfigError
from repro.methods.base import AllocationContext
from repro.models.adapter import adapter_for
from repro.prune.pipeline import measure_sparsity, prune_model
from repro.registry import build
from tests.conftest import compose_run

FAST = ("model=tiny-llama", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=4", "model.seqlen=32")
SMALL_NAL = ("allocation.search_nsamples=2", "allocation.lambdas_block=[0.05,0.2]", "allocation.lambdas_row=[0.0,0.2]")
ALLOCATIONS = {"uniform": (), "owl": (), "alpha": (), "neuronal": SMALL_NAL}
SCORES = {"magnitude": ("score.granularity=row",), "wanda": (), "multiflow": (), "sparsegpt": (), "dsnot": ()}


def _ids(n=4, seqlen=32, seed=0):
    return torch.randint(3, 259, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("allocation", list(ALLOCATIONS))
def test_every_allocator_composes_with_every_scorer(tiny_llama, allocation):
    model, _ = tiny_llama
    for score, extra in SCORES.items():
        run = compose_run(*FAST, f"score={score}", f"allocation={allocation}", "sparsity=0.7",
                          *extra, *ALLOCATIONS[allocation])
        m = copy.deepcopy(model)
        report = prune_model(m, adapter_for(m), run, _ids())
        assert report["allocation"] == allocation and report["score"] == score
        overall = measure_sparsity(m, adapter_for(m))["overall"]
        assert overall == pytest.approx(0.7, abs=0.03), (score, allocation, overall)


def _allocate(model, *overrides, ids=None):
    run = compose_run(*FAST, *overrides)
    report: dict = {}
    ctx = AllocationContext(model, adapter_for(model), run, build("score", run.score), ids if ids is not None
                            else _ids(), report)
    return build("allocation", run.allocation).allocate(ctx), report


def test_neuronal_search_restores_weights_and_picks_the_first_minimum(tiny_llama):
    model, _ = tiny_llama
    m = copy.deepcopy(model)
    before = {n: lin.weight.clone() for n, lin in adapter_for(m).all_linears(m).items()}
    targets, report = _allocate(m, "score=wanda", "allocation=neuronal", "sparsity=0.7", "allocation.search_nsamples=2",
                                "allocation.lambdas_block=[0.3,0.05,0.05,0.2]", "allocation.lambdas_row=[0.0,0.1,0.2]")
    for n, lin in adapter_for(m).all_linears(m).items():
        assert torch.equal(lin.weight, before[n]), n                         # every pass restored the weights
    block = [report["block_objectives"][k] for k in ("0.3", "0.05", "0.2")]
    assert report["lambda_block"] == [0.3, 0.05, 0.2][first_argmin(block)]
    assert report["search_passes"] == 3 + 3                               # the repeated 0.05 candidate is reused
    rows = list(report["row_objectives"].values())
    assert report["lambda_row"] == [0.0, 0.1, 0.2][first_argmin(rows)]
    # per-row targets whose mean per layer is the block's sparsity (clip aside), last block uniform rows
    per_block = linear_ramp_sparsities(2, 0.7, report["lambda_block"])
    q0 = targets["model.layers.0.self_attn.q_proj"]
    assert isinstance(q0, torch.Tensor) and q0.numel() == 64
    assert float(q0.mean()) == pytest.approx(per_block[0], abs=1e-6)
    assert torch.all(targets["model.layers.1.mlp.down_proj"] == per_block[1])
    assert torch.all(targets["model.layers.0.self_attn.k_proj"] == per_block[0])   # GQA k/v rows: uniform


def test_neuronal_row_step_skipped_for_sparsegpt_and_block_step_only(tiny_llama):
    model, _ = tiny_llama
    for overrides in (("score=sparsegpt",), ("score=wanda", "allocation.step=block")):
        targets, report = _allocate(copy.deepcopy(model), *overrides, "allocation=neuronal", "sparsity=0.6",
                                    "allocation.search_nsamples=2", "allocation.lambdas_block=[0.05,0.1]")
        assert report["lambda_row"] is None and report["search_passes"] == 2
        assert all(isinstance(t, float) for t in targets.values())
        assert targets["model.layers.0.mlp.up_proj"] == pytest.approx(0.6 - report["lambda_block"])


def test_neuronal_default_grid_drops_025_at_80_percent():
    from repro.allocation.neuronal import LAMBDAS_ROW, block_lambda_grid

    assert len(block_lambda_grid(0.7)) == 14 and 0.25 in block_lambda_grid(0.7)
    assert len(block_lambda_grid(0.8)) == 13 and 0.25 not in block_lambda_grid(0.8)
    assert len(LAMBDAS_ROW) == 15 and LAMBDAS_ROW[0] == 0.0


def test_neuronal_runs_on_opt_with_its_row_mapping(tiny_opt):
    model, _ = tiny_opt
    targets, report = _allocate(copy.deepcopy(model), "model=tiny-opt", "score=wanda", "allocation=neuronal",
                                "sparsity=0.6", *SMALL_NAL[:1], "allocation.lambdas_block=[0.05]",
                                "allocation.lambdas_row=[0.2]", ids=torch.randint(3, 200, (2, 32)))
    fc1 = targets["model.decoder.layers.0.fc1"]
    assert fc1.numel() == model.model.decoder.layers[0].fc1.out_features and float(fc1.std()) > 0


def test_owl_one_sparsity_per_block_with_mean_s(tiny_llama):
    model, _ = tiny_llama
    targets, report = _allocate(copy.deepcopy(model), "score=wanda", "allocation=owl", "sparsity=0.7",
                                "allocation.lam=0.1")
    b0 = {t for n, t in targets.items() if ".layers.0." in n}
    b1 = {t for n, t in targets.items() if ".layers.1." in n}
    assert len(b0) == 1 and len(b1) == 1
    ratios = report["outlier_ratios"]
    assert len(ratios) == 2 and ratios[0] != ratios[1]
    # 2 blocks: the ends of [s − λ, s + λ]; the block with more outliers is kept denser (OWL's direction).
    more_outliers = 0 if ratios[0] > ratios[1] else 1
    by_block = [b0.pop(), b1.pop()]
    assert by_block[more_outliers] == pytest.approx(0.6) and by_block[1 - more_outliers] == pytest.approx(0.8)


@pytest.mark.parametrize("override, field", [("allocation.clamp=both", "allocation.clamp"),
                                             ("allocation.step=all", "allocation.step"),
                                             ("allocation.mapping=row", "allocation.mapping")])
def test_bad_allocation_settings_are_config_errors(override, field):
    name = override.split(".")[1].split("=")[0]
    alloc = {"clamp": "owl", "step": "neuronal", "mapping": "alpha"}[name]
    with pytest.raises(ConfigError, match=field):
        compose_run(f"allocation={alloc}", override)
