"""The allocators' formulas on constructed inputs (pure functions, no model)."""
import math

import pytest
import torch

from repro.allocation._ratio_maps import (alpha_sparsities, first_argmin, hill_alpha_peak, linear_ramp_sparsities,
                                          neuron_alignment, outlier_ratio, owl_sparsities, row_sparsities)


def test_outlier_ratio_counts_scores_above_m_times_mean():
    # mean of [1]*8 + [10, 30] = 4.8: M=2 -> threshold 9.6 (10 and 30 are outliers, 20 %); M=3 -> 14.4 (10 %)
    scores = [torch.ones(2, 4), torch.tensor([[10.0, 30.0]])]
    assert outlier_ratio(scores, 2.0) == pytest.approx(20.0)
    assert outlier_ratio(scores, 3.0) == pytest.approx(10.0)
    assert outlier_ratio([torch.tensor([1.0, 1.0, 4.0])], 2.0) == pytest.approx(0.0)    # 4 == 2·mean: not >


def test_owl_ratios_for_given_outlier_ratios():
    # D = [1, 2, 3], λ = 0.08, s = 0.7: minmax·2λ = [0, .08, .16], centred on 0.3 -> densities [.22, .30, .38]
    got = owl_sparsities([1.0, 2.0, 3.0], 0.7, 0.08)
    assert got == pytest.approx([0.78, 0.70, 0.62])
    assert sum(got) / 3 == pytest.approx(0.7)                  # mean sparsity preserved


def test_owl_clamps_differ_between_owl_and_neuronal():
    # s = 0.95, λ = 0.2: raw sparsities [1.15, 0.75] -> OWL keeps 1.15 (no upper clamp), NeuronAL clips to 0.99
    assert owl_sparsities([0.0, 1.0], 0.95, 0.2, "owl") == pytest.approx([1.15, 0.75])
    assert owl_sparsities([0.0, 1.0], 0.95, 0.2, "neuronal") == pytest.approx([0.99, 0.75])
    # s = 0.05, λ = 0.2: raw [0.25, -0.15] -> both clamps map <= 0 to 0.01
    assert owl_sparsities([0.0, 1.0], 0.05, 0.2, "owl") == pytest.approx([0.25, 0.01])
    assert owl_sparsities([0.0, 1.0], 0.05, 0.2, "none") == pytest.approx([0.25, -0.15])


def test_equal_outlier_ratios_give_uniform_instead_of_nan():
    assert owl_sparsities([2.0, 2.0, 2.0], 0.6, 0.08) == pytest.approx([0.6] * 3)


def test_neuronal_block_profile_is_a_linear_ramp_in_depth():
    got = linear_ramp_sparsities(5, 0.7, 0.1)
    assert got == pytest.approx([0.6, 0.65, 0.7, 0.75, 0.8])   # s − λ + 2λ·l/(L−1), block 0 densest
    assert linear_ramp_sparsities(2, 0.95, 0.1) == pytest.approx([0.85, 0.99])   # NeuronAL's [0.01, 0.99] clamp


def test_row_sparsities_for_a_given_alignment_vector():
    # g = [0, 1, 2, 3], λ = 0.1, s = 0.7: minmax·2λ = [0, 1/15, 2/15, .2], mean .1 -> densities .2 .. .4
    got = row_sparsities(torch.tensor([0.0, 1.0, 2.0, 3.0]), 0.7, 0.1)
    assert got.tolist() == pytest.approx([0.8, 0.8 - 0.2 / 3, 0.8 - 0.4 / 3, 0.6])
    assert float(got.mean()) == pytest.approx(0.7)
    # larger dense − sparse gap = denser row; λ = 0 = uniform; clip to [0.01, 0.99]
    assert row_sparsities(torch.tensor([3.0, 0.0]), 0.7, 0.0).tolist() == pytest.approx([0.7, 0.7])
    assert row_sparsities(torch.tensor([0.0, 1.0]), 0.98, 0.05).tolist() == pytest.approx([0.99, 0.93])
    # zero-sum alignment keeps uniform rows (reference); a constant one too (reference: NaN)
    assert row_sparsities(torch.tensor([1.0, -1.0]), 0.6, 0.1).tolist() == pytest.approx([0.6, 0.6])
    assert row_sparsities(torch.tensor([2.0, 2.0]), 0.6, 0.1).tolist() == pytest.approx([0.6, 0.6])


def test_first_minimum_wins_ties():
    assert first_argmin([0.3, 0.1, 0.2, 0.1]) == 1
    assert first_argmin([0.5, 0.5]) == 0


def test_neuron_alignment_formula():
    dense, sparse = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 0.0])
    expected = torch.norm(torch.tensor([0.25 - 0.25, 0.25 - 0.75, 0.5 - 0.0])).item() / 3
    assert neuron_alignment(dense, sparse) == pytest.approx(expected)
    assert neuron_alignment(dense, 2 * dense) == pytest.approx(0.0)       # scale-free


def _pareto_quantiles(alpha: float, n: int) -> torch.Tensor:
    q = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (1 - q) ** (-1.0 / (alpha - 1))                      # density ∝ λ^-α on [1, ∞)


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_hill_estimate_recovers_a_power_law_exponent(alpha):
    est = hill_alpha_peak(_pareto_quantiles(alpha, 4000))
    assert est == pytest.approx(alpha, abs=0.08)


def test_alpha_estimate_on_a_matrix_with_known_spectrum():
    from repro.allocation.alpha import layer_alphas

    torch.manual_seed(0)
    eigs = _pareto_quantiles(3.0, 256)
    u, _ = torch.linalg.qr(torch.randn(256, 256, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(256, 256, dtype=torch.float64))
    lin = torch.nn.Linear(256, 256, bias=False)
    lin.weight.data = (u @ torch.diag(eigs.sqrt()) @ v.T).float()
    got = layer_alphas({"w": lin}, bins=100, quirk=True)["w"]
    assert got == pytest.approx(hill_alpha_peak(eigs.float()), abs=1e-2)
    assert got == pytest.approx(3.0, abs=0.3)


def test_log10_quirk_moves_the_xmin_search():
    # a power law from 1 plus a spike at 200 that holds the histogram peak: the quirk's lower bound log10(0.95·200)
    # ≈ 2.3 lets xmin candidates start far below the peak, the intended bound 0.95·200 does not -> other α
    pareto = _pareto_quantiles(2.5, 3000)
    e = torch.cat([pareto, 200.0 + torch.linspace(0, 0.5, 400, dtype=torch.float64)]).float()
    quirk, intended = hill_alpha_peak(e, log10_xmin_quirk=True), hill_alpha_peak(e, log10_xmin_quirk=False)
    assert quirk == pytest.approx(1.5375, abs=1e-3) and intended == pytest.approx(7.0135, abs=1e-3)


def test_alpha_sparsities_parameter_weighted_mean_and_order():
    got = alpha_sparsities([1.0, 2.0, 3.0], [100, 100, 200], 0.7, 0.2)
    assert (100 * got[0] + 100 * got[1] + 200 * got[2]) / 400 == pytest.approx(0.7)
    assert got[0] < got[1] < got[2]                             # heavier-tailed spectrum (higher α) pruned more
    assert got[2] / got[0] == pytest.approx(1.2 / 0.8)          # endpoints of [1 − ε, 1 + ε]
    high = alpha_sparsities([1.0, 3.0], [10, 10], 0.85, 0.3)
    assert high[1] > 1.0                                        # no clamp in the reference
    assert max(alpha_sparsities([1.0, 3.0], [10, 10], 0.85, 0.3, clamp=True)) == pytest.approx(0.99)
    assert not any(math.isnan(x) for x in alpha_sparsities([2.0, 2.0], [1, 1], 0.5, 0.3))


def _hill_loop(e, bins=100):
    """The reference's per-candidate loop (esd_utils.py, fix_fingers='xmin_peak'), written out for the test."""
    e = torch.sort(e.float())[0]
    n_all, log_e, h = e.numel(), torch.log(e), torch.log10(e)
    counts = torch.histc(h, bins, min=float(h.min()), max=float(h.max()))
    peak = 10 ** torch.linspace(float(h.min()), float(h.max()), bins + 1)[torch.argmax(counts)]
    lo, hi = torch.log10(0.95 * peak), 1.5 * peak
    alphas, ds = torch.zeros(n_all - 1), torch.ones(n_all - 1)
    for i, xmin in enumerate(e[:-1]):
        if xmin < lo:
            continue
        if xmin > hi:
            break
        n = float(n_all - i)
        alphas[i] = a = 1 + n / (torch.sum(log_e[i:]) - n * log_e[i])
        if a > 1:
            ds[i] = torch.max(torch.abs(1 - (e[i:] / xmin) ** (-a + 1) - torch.arange(n) / n))
    return float(alphas[torch.argmin(ds)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_estimator_equals_the_reference_loop(seed):
    torch.manual_seed(seed)
    w = torch.randn(96, 160) * torch.linspace(0.2, 2.0, 160)
    eigs = torch.linalg.svdvals(w) ** 2
    assert hill_alpha_peak(eigs) == pytest.approx(_hill_loop(eigs), rel=1e-4)


def test_esd_from_the_gram_matrix_equals_squared_singular_values():
    from repro.allocation.alpha import esd

    torch.manual_seed(0)
    for shape in [(48, 80), (80, 48)]:
        w = torch.randn(*shape)
        ref = torch.sort(torch.linalg.svdvals(w) ** 2)[0]
        got = esd(w)
        assert got.numel() == min(shape)
        assert torch.allclose(got, ref, atol=1e-5 * float(ref.max()))
