"""EoRA's eigenspace projection against the reference (tests/golden/eora_reference.pt, made by
tools/golden/eora_fixture.py running NVlabs/EoRA 11ff6c0 `llama_sequential_eigen` unmodified on a two-block
synthetic model: 50 % unstructured, 2:4 and a rank-deficient calibration set whose C has negative eigenvalues).

For every linear the fixture holds the dense and compressed weights, the second-moment matrix C the reference fed
to `eigh`, and its lora_A / lora_B. `eora_math.eora_factors(ΔW, C, r)` must give the same correction B·A.
Tolerance: 1e-4 relative (Frobenius) on B·A, and 1e-4 on the C-weighted residual; A and B individually up to the
sign of each singular pair (SVD's freedom). Observed: bit-identical (torch 2.13 CPU, the same float32 SVD on the same matrices); a mutation using
C² instead of C (S = QΛ) misses by ≥ 0.1, one rank fewer by ≥ 0.05.
The plain SVD of ΔW (`svd_factors`, blind to C) misses by orders of magnitude more: the fixture would catch a
wrong eigen-projection (C instead of C^½, a missing S⁻¹, no truncation in the eigenspace).
"""
from pathlib import Path

import pytest
import torch

from repro.recovery import eora_math as em

FIXTURE = Path(__file__).parent / "golden" / "eora_reference.pt"
TOL = 1e-4


def _cases():
    data = torch.load(FIXTURE, weights_only=True)
    assert data["reference"].startswith("NVlabs/EoRA 11ff6c0")
    return [(f"{c}:{k}", case["rank"], lin) for c, case in data["cases"].items() for k, lin in case["linears"].items()]


CASES = _cases()


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("name,rank,lin", CASES, ids=[c[0] for c in CASES])
def test_eora_factors_match_reference(name, rank, lin):
    delta = lin["dense"] - lin["compressed"]
    cov = lin["cov"].double()
    a, b = em.eora_factors(delta, cov, rank)
    ref_a, ref_b = lin["lora_A"], lin["lora_B"]
    assert a.shape == ref_a.shape and b.shape == ref_b.shape
    ours, ref = b @ a, ref_b @ ref_a
    if name.startswith("rank_deficient"):
        # C's null space: S⁻¹ is huge there (lifted eigenvalues ~1e-6) and float32 noise is amplified in A's
        # null-space part, which no input with covariance C ever excites. Compare what the inputs see.
        err = em.weighted_error(ours - ref, cov) / em.weighted_error(ref, cov)
        assert err < TOL ** 2, (name, err)
        err_delta = em.weighted_error(delta - ours, cov) / em.weighted_error(delta - ref, cov)
        assert abs(err_delta - 1) < TOL, (name, err_delta)
        return
    assert _rel(ours, ref) < TOL, (name, _rel(ours, ref))
    sign = torch.sign((b * ref_b).sum(0))                     # per singular pair
    assert _rel(b * sign, ref_b) < TOL and _rel(a * sign[:, None], ref_a) < TOL, name


def test_fixture_tells_eigen_from_plain_svd():
    """The check above is not vacuous: activation-blind SVD factors of the same rank differ from the reference."""
    worst = []
    for name, rank, lin in CASES:
        if name.startswith("rank_deficient"):
            continue
        a, b = em.svd_factors(lin["dense"] - lin["compressed"], rank)
        worst.append(_rel(b @ a, lin["lora_B"] @ lin["lora_A"]))
    assert min(worst) > 100 * TOL, worst


def test_reference_covariance_is_not_the_uniform_mean():
    """Deviation check (documented in eora.py): the reference's hook updates C ← C·n/(n+1) + XᵀX/n with n fixed
    at eigen_nsamples, so earlier sequences weigh less than later ones; ours is the plain mean Σ XᵀX / N. On block 0
    (inputs = the stored calibration activations) the reference's C equals that weighted sum, not the mean."""
    data = torch.load(FIXTURE, weights_only=True)
    case = data["cases"]["unstructured"]
    x = case["activations"].double()                           # n × seqlen × h, block 0's fc1 input
    n = x.shape[0]
    per_seq = torch.einsum("nti,ntj->nij", x, x)
    ref = case["linears"]["model.layers.0.fc1"]["cov"].double()
    weighted = sum(per_seq[k] * (n / (n + 1)) ** (n - 1 - k) / n for k in range(n))
    uniform = per_seq.sum(0) / n
    assert _rel(ref, weighted) < 1e-5
    assert _rel(ref, uniform) > 1e-2
    # the scale alone would not matter (B·A is invariant to C → αC); the unequal weights do
    a_w, b_w = em.eora_factors(case["linears"]["model.layers.0.fc1"]["dense"]
                               - case["linears"]["model.layers.0.fc1"]["compressed"], uniform, case["rank"])
    lin = case["linears"]["model.layers.0.fc1"]
    assert _rel(b_w @ a_w, lin["lora_B"] @ lin["lora_A"]) > TOL
