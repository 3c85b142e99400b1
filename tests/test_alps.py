"""ALPS against the reference itself: tests/golden/alps_reference.pt holds what mazumder-lab/ALPS 8af9e6b
`ALPS_admm` / `cg_batch` returned on small random layers (tools/golden/alps_fixture.py ran them, unmodified)."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from repro.config import ConfigError
from repro.methods._admm import cg_batch
from repro.methods.alps import ALPS, ALPSConfig, Normalized, alps_prune, layer_pattern
from repro.prune.stats import LayerStats
from tests.conftest import compose_run

FIXTURE = torch.load(Path(__file__).parent / "golden" / "alps_reference.pt")
CASES = FIXTURE["cases"]


def _pattern(case):
    return SimpleNamespace(name="nm", n=case["nm_m"] - case["nm_n"], m=case["nm_m"]) if case["nm_m"] else None


def _ours(case, hessian=None):
    prob = Normalized.of(case["xtx"] if hessian is None else hessian, 0.01)
    pat = layer_pattern(case["dense"].numel(), case["sparsity"], _pattern(case))
    return alps_prune(case["dense"], prob, pat, ALPSConfig())


@pytest.mark.parametrize("name", sorted(CASES))
def test_masks_and_weights_equal_the_reference(name):
    case = CASES[name]
    ours, info = _ours(case)
    ref = case["pruned"]
    assert torch.equal(ours == 0, ref == 0)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    if name == "unstructured_02":
        assert info["restarts"] >= 1                       # the fixture covers the restart branch
    if case["nm_m"]:
        kept = (ours != 0).view(ours.shape[0], -1, case["nm_m"]).sum(-1)
        assert (kept == case["nm_n"]).all()


def test_cg_equals_the_reference():
    cg = FIXTURE["cg"]
    X = cg_batch(cg["A"], cg["rhs"], cg["support"], cg["X0"], rtol=1e-4, maxiter=10)
    torch.testing.assert_close(X, cg["X"], atol=1e-6, rtol=1e-5)
    assert torch.equal(X == 0, cg["X0"] == 0)               # the support never grows


def test_scale_of_the_hessian_does_not_matter():
    """The engine's H = (2/N) Σ xxᵀ instead of the reference's Σ xxᵀ: same masks (float rounding aside)."""
    case = CASES["unstructured_70"]
    ours, _ = _ours(case, hessian=case["xtx"] * (2 / 256))
    ref = case["pruned"]
    assert (ours == 0).ne(ref == 0).float().mean() < 0.01
    assert (ours - ref).abs().max() < 1e-2 * ref.abs().max()


def test_admm_beats_its_magnitude_start():
    """The refined weights fit the layer better than the Wanda-like start P_k(B̂) with the dense kept values."""
    case = CASES["unstructured_70"]
    prob = Normalized.of(case["xtx"], 0.01)
    ours, _ = _ours(case)
    H, W = case["xtx"], case["dense"]
    start = (W * prob.x).abs()
    start = W * (start >= start.flatten().kthvalue(int(0.7 * W.numel()) + 1).values)

    def err(Wp):
        return torch.trace((Wp - W) @ H @ (Wp - W).T)
    assert err(ours) < 0.5 * err(start)


def test_scorer_shares_the_eigendecomposition_and_refuses_row_targets():
    stats = LayerStats({"hessian"})
    stats.add(torch.randn(256, 16) * torch.rand(16), nseq=4)
    scorer = ALPS(ALPSConfig())
    lins = [torch.nn.Linear(16, r, bias=False) for r in (8, 6)]
    for i, lin in enumerate(lins):
        scorer.prune_layer(f"l{i}", lin, stats, 0.5, None)
        assert (lin.weight == 0).sum() == lin.weight.numel() // 2
    assert len(stats.cache) == 1
    with pytest.raises(ConfigError, match="allocation"):
        scorer.prune_layer("l0", lins[0], stats, torch.full((8,), 0.5), None)


def test_runs_through_the_engine(tmp_path):
    from repro.run import execute

    rec = execute(compose_run("env=offline", "model=tiny-llama", "score=alps", "sparsity=0.6", "calib.nsamples=4",
                              "eval.ppl.max_windows=2", f"paths.results={tmp_path}"))
    assert rec["status"] == "ok"
    assert abs(rec["sparsity"]["overall"] - 0.6) < 1e-3


def test_config_checks():
    with pytest.raises(ConfigError, match="score.rho"):
        compose_run("score=alps", "score.rho=0")
