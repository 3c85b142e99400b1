"""EoRA (repro/recovery/eora.py, eora_math.py): the paper's optimality and exactness, end to end on a tiny LLaMA."""
from __future__ import annotations

import pytest
import torch

from repro.config import ConfigError
from repro.recovery import eora_math as em
from tests.conftest import compose_run


def _problem(out=12, inp=10, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, 2, inp)                     # anisotropic inputs: EoRA differs from plain SVD
    x = torch.randn(n, inp, generator=g, dtype=torch.float64) * scales
    delta = torch.randn(out, inp, generator=g, dtype=torch.float64)
    return delta, x, x.t() @ x / n


def test_full_rank_reproduces_the_error_and_rank_r_beats_plain_svd():
    delta, x, cov = _problem()
    a, b = em.eora_factors(delta, cov, rank=10)
    assert torch.allclose((b @ a).double(), delta, atol=1e-4)          # full rank: compensated = dense
    for r in (1, 3, 6):
        a, b = em.eora_factors(delta, cov, rank=r)
        sa, sb = em.svd_factors(delta, rank=r)
        eora = em.weighted_error(delta - (b @ a).double(), cov)
        svd = em.weighted_error(delta - (sb @ sa).double(), cov)
        assert eora < svd * 0.99                                        # strictly better on anisotropic inputs
        # optimal: the Eckart-Young bound in the eigenspace, the sum of the squared tail singular values of ΔW S
        s, _ = em.eigen_scaling(cov)
        tail = torch.linalg.svdvals(delta.float() @ s)[r:].double().square().sum()
        assert eora == pytest.approx(float(tail), rel=1e-3)
        # the weighted error is the output error on the calibration inputs
        out_err = ((x @ (delta - (b @ a).double()).t()).square().sum() / x.shape[0]).item()
        assert eora == pytest.approx(out_err, rel=1e-6)


def test_singular_covariance_is_lifted_not_divided_by_zero():
    delta, x, _ = _problem()
    x[:, 0] = 0                                            # a dead input channel: a zero eigenvalue
    a, b = em.eora_factors(delta, x.t() @ x / x.shape[0], rank=4)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


@pytest.mark.parametrize("override, field", [("recovery_budget.rank=0", "recovery.rank"),
                                             ("recovery_budget.rank=33", "recovery.rank"),
                                             ("recovery.method=qr", "recovery.method"),
                                             ("recovery_budget.rank=8 recovery.nsamples=999", "recovery.nsamples")])
def test_bad_eora_input_fails_preflight(override, field):
    from repro.run import preflight
    with pytest.raises(ConfigError) as e:        # env=offline sets the rank through recovery_budget; tiny k/v are 32 wide
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", "recovery=eora", *override.split()))
    assert e.value.field_name == field
    with pytest.raises(ConfigError, match="recovery.name"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=dense", "recovery=eora"))


@torch.no_grad()
def test_full_rank_eora_restores_the_dense_logits(tmp_path):
    """Only k/v pruned and compensated at their full rank (32): the model computes the dense function again."""
    from types import SimpleNamespace

    from repro.models.loading import load_model
    from repro.recovery.eora import Eora
    run = compose_run("model=tiny-llama", "score=wanda", "recovery=eora", "recovery.rank=32",
                      "recovery.target_modules=[k_proj,v_proj]")
    model, tok = load_model(run.model, seed=run.seed)
    ids = torch.randint(0, 259, (8, 32), generator=torch.Generator().manual_seed(0))
    dense = model(ids).logits
    g = torch.Generator().manual_seed(1)
    for layer in model.model.layers:
        for lin in (layer.self_attn.k_proj, layer.self_attn.v_proj):
            lin.weight[torch.rand(lin.weight.shape, generator=g) < 0.5] = 0
    pruned = model(ids).logits
    report = Eora(run.recovery).recover(model, tok, run, SimpleNamespace(input_ids=ids), tmp_path)
    assert report["linears"] == 4 and report["zeros_unmerged"]["base_zero_fraction"] > 0.4
    err_pruned, err_eora = (pruned - dense).abs().max(), (model(ids).logits - dense).abs().max()
    assert err_eora < 1e-3 * err_pruned


def test_eora_run_records_the_error_drop_and_reuses_its_factors(results_dir):
    from repro.run import execute
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=eora",
            "recovery.target_modules=[k_proj,v_proj]", "recovery_budget.rank=32", "eval.ppl.max_windows=1",
            f"paths.results={results_dir}")
    rec = execute(compose_run(*args))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["weighted_error_after"] < 1e-6 * r["weighted_error_before"]
    assert r["zeros_unmerged"]["base_zero_fraction"] > 0.45 > r["zeros_unmerged"]["effective_zero_fraction"]
    assert abs(rec["sparsity_after_recovery"]["overall"] - rec["sparsity"]["overall"]) < 1e-9
    again = execute(compose_run(*args, "force=true"))
    assert again["recovery"]["reused_factors"] is True and again["metrics"]["ppl"] == rec["metrics"]["ppl"]
