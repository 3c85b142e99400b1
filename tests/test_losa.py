"""LoSA: the schedule, CKA, ratios and rank allocation against the reference (fixture), round resume."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_run
from repro.config import ConfigError
from repro.recovery import losa_math as lm

FIXTURE = Path(__file__).resolve().parents[1] / "tools" / "golden" / "losa_fixture.json"


def test_cubic_schedule_matches_the_note():
    assert [round(lm.round_sparsity(0.5, t, 5), 3) for t in range(1, 6)] == [0.244, 0.392, 0.468, 0.496, 0.5]
    assert [round(lm.round_sparsity(0.7, t, 5), 3) for t in range(1, 6)] == [0.342, 0.549, 0.655, 0.694, 0.7]


def test_delta_band_is_not_reset_above_0_7_unless_asked():
    deltas, prev = [], None
    for t in range(1, 6):                     # s = 0.8: s_t = 0.390, 0.627, 0.749, 0.794, 0.8
        prev = lm.band_halfwidth(lm.round_sparsity(0.8, t, 5), prev)
        deltas.append(prev)
    assert deltas == [0.01, 0.03, 0.03, 0.03, 0.03]
    assert lm.band_halfwidth(0.75, 0.03, above_07=0.05) == 0.05
    assert lm.band_halfwidth(0.55, None) == 0.02


def test_linear_cka_closed_forms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, dtype=torch.float64, generator=g)
    y = 0.3 * x + torch.randn(12, 1, dtype=torch.float64, generator=g)
    r = np.corrcoef(x[:, 0].numpy(), y[:, 0].numpy())[0, 1]
    assert lm.linear_cka(x @ x.T, y @ y.T) == pytest.approx(r ** 2, rel=1e-10)   # 1-D features: CKA = corr²
    f = torch.randn(10, 30, dtype=torch.float64, generator=g)
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64, generator=g))
    h = 3.0 * f @ q + 2.0                                                         # rotation, scale, shift
    assert lm.linear_cka(f @ f.T, h @ h.T) == pytest.approx(1.0, abs=1e-10)


def test_rank_allocation_and_cka_match_the_reference_functions():
    fx = json.loads(FIXTURE.read_text())
    for case in fx["allocate_ranks"]:
        assert lm.allocate_ranks(case["errors"], case["omega"]) == case["ranks"], (case["kind"], case["omega"])
    misses = [c for c in fx["allocate_ranks"] if sum(c["ranks"]) != c["omega"] * len(c["ranks"])]
    assert misses                               # the one-pass repair does miss Σr = Ω·L for steep profiles
    for case in fx["cka"]:
        x, y = torch.tensor(case["x"], dtype=torch.float64), torch.tensor(case["y"], dtype=torch.float64)
        assert lm.linear_cka(x @ x.T, y @ y.T) == pytest.approx(case["cka"], abs=1e-9)


def test_importance_and_slsqp_ratios_solve_the_band_lp():
    from scipy.optimize import linprog
    sim = np.array([[1.0, 0.9, 0.2, 0.1], [0.9, 1.0, 0.3, 0.2], [0.2, 0.3, 1.0, 0.5], [0.1, 0.2, 0.5, 1.0]])
    imp = lm.layer_importance(sim, beta=100.0)
    tau = (sim.sum(1) - 1) / (sim.sum() - 4)
    assert np.allclose(imp, np.exp(-100 * tau))
    # A well-conditioned objective: SLSQP from x0 = 1 lands on the LP vertex (least important layers pruned most).
    imp = np.array([0.9, 0.5, 0.7, 0.3])
    ratios = lm.layer_ratios(imp, 0.5, 0.03)
    lp = linprog(imp, A_eq=np.ones((1, 4)) / 4, b_eq=[0.5], bounds=[(0.47, 0.53)] * 4).x
    assert np.mean(ratios) == pytest.approx(0.5) and np.allclose(ratios, lp, atol=1e-6)
    assert np.allclose(ratios, [0.47, 0.53, 0.47, 0.53], atol=1e-6)
    # A nearly flat one (β = 100 on 4 layers: I ~ 1e-8): SLSQP stops at once, near the uniform ratio — what the
    # reference computes too (no LP vertex); the band and the mean still hold.
    flat = lm.layer_ratios(lm.layer_importance(sim, beta=100.0), 0.5, 0.03)
    assert np.mean(flat) == pytest.approx(0.5, abs=1e-6) and np.allclose(flat, 0.5, atol=1e-3)


def test_reconstruction_error_closed_form():
    dense = torch.tensor([[[3.0, 0.0], [4.0, 2.0]]])      # channel norms 5, 2
    sparse = torch.tensor([[[3.0, 1.0], [2.0, 2.0]]])
    assert lm.reconstruction_error(dense, sparse) == pytest.approx(((2 / 5) ** 2 + (1 / 2) ** 2) / 2)


def test_losa_preflight():
    from repro.run import preflight
    with pytest.raises(ConfigError, match="score.name"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=magnitude", "recovery=losa"))
    with pytest.raises(ConfigError, match="recovery.final_sparsity"):
        compose_run("model=tiny-llama", "score=wanda", "recovery=losa", "recovery.final_sparsity=approx")
    with pytest.raises(ConfigError, match="recovery.shards"):
        compose_run("model=tiny-llama", "score=wanda", "recovery=losa", "recovery.rounds=3")
    with pytest.raises(ConfigError, match="recovery.cka_nsamples"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", "recovery=losa",
                              "recovery_budget.cka_nsamples=64"))


def test_losa_resumes_from_its_last_completed_round(results_dir, monkeypatch):
    from repro.recovery import losa
    from repro.run import execute
    calls = []
    real = losa.fine_tune

    def flaky(*a, **k):
        calls.append(k.get("desc"))
        if k.get("desc") == "LoSA round 2" and len(calls) == 2:
            raise RuntimeError("killed")
        return real(*a, **k)

    monkeypatch.setattr(losa, "fine_tune", flaky)
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.6", "recovery=losa",
            "recovery_budget.shards=[0:8,8:16]", "recovery.rounds=2", "eval.ppl.max_windows=1",
            f"paths.results={results_dir}")
    with pytest.raises(RuntimeError, match="killed"):
        execute(compose_run(*args))
    rec = execute(compose_run(*args))
    assert calls == ["LoSA round 1", "LoSA round 2", "LoSA round 2"]          # round 1 was not trained again
    r = rec["recovery"]
    assert r["resumed_after_round"] == 1 and [x["round"] for x in r["rounds"]] == [1, 2]
    assert r["rounds"][0]["sparsity_target"] == pytest.approx(0.6 - 0.6 * 0.5 ** 3)
    assert rec["sparsity"]["overall"] == pytest.approx(0.6, abs=0.02) and rec["prune"]["pruned_by"] == "recovery"
    assert r["final_sparsity"] == rec["sparsity"]["overall"]
    again = execute(compose_run(*args, "force=true"))                         # finished: merged weights reused
    assert again["recovery"]["reused_final_weights"] and again["metrics"] == rec["metrics"]


def test_integer_counts_hit_the_total_and_respect_the_lower_bounds():
    k = lm.integer_counts([0.67, 0.73, 0.70, 0.70], 64, 4 * int(64 * 0.7), lower=[46, 0, 0, 0])
    assert sum(k) == 4 * 44 and k[0] == 46 and all(0 <= v <= 64 for v in k)
    assert lm.integer_counts([0.7] * 3, 576, 3 * 403, [0, 0, 0]) == [403, 403, 403]
    with pytest.raises(ValueError):
        lm.integer_counts([0.7, 0.7], 64, 80, lower=[45, 45])
    # the lower bound enters the band LP: the layer that already has 0.72 keeps it, the mean stays s_t
    r = lm.layer_ratios(np.array([0.9, 0.5, 0.7, 0.3]), 0.7, 0.03, lower=[0.72, 0.0, 0.0, 0.0])
    assert r[0] == pytest.approx(0.72) and np.mean(r) == pytest.approx(0.7)


@pytest.mark.parametrize("mode", ["exact", "reference"])
def test_losa_final_zero_count_equals_the_uniformly_pruned_model(mode, results_dir, monkeypatch):
    """Zeros never regrow across rounds: when the layer order flips between rounds, the reference's ratios end
    above s (SmolLM2 Wanda 0.7: 0.7039 against 0.6997); `exact` ends at the zero count of `recovery=none`."""
    from repro.run import execute
    flips = iter([[0.3, 0.9], [0.9, 0.3], [0.3, 0.9]])         # which of the 2 layers CKA calls redundant, by round
    monkeypatch.setattr(lm, "layer_importance", lambda sim, beta: np.array(next(flips)))
    base = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.7", "eval.ppl.max_windows=1",
            f"paths.results={results_dir}")
    none = execute(compose_run(*base))
    args = base + ("recovery=losa", "recovery_budget.shards=[0:4,4:8,8:12]", "recovery.rounds=3",
                   "recovery_budget.training.max_steps=1", f"recovery.final_sparsity={mode}")
    rec = execute(compose_run(*args))
    r = rec["recovery"]
    linears = sum(1 for k in none["sparsity"]["per_layer"])
    assert linears == 14 and r["final_sparsity_mode"] == mode
    ratios = np.array([x["ratios"] for x in r["rounds"]])
    if mode == "exact":
        assert rec["sparsity"]["overall"] == pytest.approx(none["sparsity"]["overall"], abs=1e-12)
        assert r["final_zeros"] == r["rounds"][-1]["target_zeros"]
        assert (np.diff(ratios, axis=0) >= -1e-9).all()              # a layer never goes below what it has
    else:                                                            # layer 1: 0.704 in round 2, kept in round 3
        s2 = lm.round_sparsity(0.7, 2, 3)
        assert np.allclose(ratios[1:], [[s2 - 0.03, s2 + 0.03], [0.73, 0.67]], atol=1e-6)
        assert rec["sparsity"]["overall"] > none["sparsity"]["overall"] + 0.005
