"""LoSA's pure functions (research note losa_restorelcc.md §1.1), re-expressed from wzhuang-xmu/LoSA@51b4e57.

- `round_sparsity(s, t, T)`: cubic schedule s_t = s − s·(1 − t/T)³ (lib/prune.py:200).
- `band_halfwidth(s_t, previous, above_07)`: δ_t = 0.01 (s_t ≤ 0.5), 0.02 (≤ 0.6), 0.03 (≤ 0.7); above 0.7 the
  reference does not reset it, so it keeps the previous round's value (`above_07=None`, lib/prune.py:203-208).
- `linear_cka(gram_x, gram_y)`: CKA of two linear Gram matrices K = F Fᵀ, centred H K H with float64 means
  (CKA/cka.py:5-63, biased estimator).
- `layer_importance(S, beta)`: τ_ℓ = Σ_{j≠ℓ} S_ℓj / Σ_m Σ_{j≠m} S_mj, I_ℓ = exp(−β τ_ℓ) (lib/prune.py:276-297).
- `layer_ratios(I, s_t, δ_t)`: min Σ x_ℓ I_ℓ s.t. mean(x) = s_t, x ∈ [s_t − δ_t, s_t + δ_t], scipy SLSQP from
  x0 = 1 with the analytic gradient, as the reference (lib/prune.py:303-332). It is an LP; SLSQP's answer is not
  always the LP vertex (a few interior values when I is flat) — kept, because it is what the reference computes.
  `lower` (per layer, optional) raises a layer's lower bound to the ratio it already has (zeros never regrow in
  LoSA: `recovery.final_sparsity=exact`); `None` gives the reference's band.
- `integer_counts(ratios, cols, total, lower)`: per-row prune counts k_ℓ of one linear kind (same shape in every
  layer) with Σ k_ℓ = total (the uniform model's count), k_ℓ ≥ lower_ℓ (already pruned), closest to cols·x_ℓ by
  largest remainders. This makes the final model's zero count equal the uniformly pruned model's.
- `reconstruction_error(dense, sparse)`: Σ ((D − S)/c_k)² / d with c_k the L2 norm of dense channel k over all
  tokens (lib/prune.py:427-430).
- `allocate_ranks(errors, omega, lo, hi)`: r̂ = clip(round(e/Σe · Ω · L), lo, hi), then ONE pass that removes
  1 from layers in ascending error order (too many) or adds 1 in descending order (too few) (lib/prune.py:13-42).
  `np.round` rounds half to even, as the reference. tests/test_losa.py checks it against the reference's own
  function (tests/fixtures/losa_reference.json, made by tools/golden/losa_fixture.py).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch


def round_sparsity(s: float, t: int, rounds: int) -> float:
    return s - s * (1 - t / rounds) ** 3


def band_halfwidth(s_t: float, previous: Optional[float], above_07: Optional[float] = None) -> float:
    if s_t <= 0.5:
        return 0.01
    if s_t <= 0.6:
        return 0.02
    if s_t <= 0.7:
        return 0.03
    if above_07 is not None:
        return above_07
    if previous is None:       # the reference would crash (args.delta_ratio unset); cannot happen for s < 1, T = 5
        raise ValueError(f"LoSA round sparsity {s_t:.3f} > 0.7 in the first round: no previous δ to keep; set "
                         f"recovery.delta_above_07")
    return previous


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    means = gram.mean(dim=0, dtype=torch.float64)
    means = means - means.mean() / 2
    return gram - means.unsqueeze(0) - means.unsqueeze(1)


def linear_cka(gram_x: torch.Tensor, gram_y: torch.Tensor) -> float:
    gx, gy = center_gram(gram_x), center_gram(gram_y)
    return float((gx * gy).sum() / (torch.linalg.norm(gx) * torch.linalg.norm(gy)))


def cka_matrix(grams: Sequence[torch.Tensor]) -> np.ndarray:
    n = len(grams)
    out = np.ones((n, n))
    centred = [center_gram(g) for g in grams]
    norms = [torch.linalg.norm(c) for c in centred]
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = float((centred[i] * centred[j]).sum() / (norms[i] * norms[j]))
    return out


def layer_importance(similarity: np.ndarray, beta: float) -> np.ndarray:
    s = np.asarray(similarity, dtype=np.float64)
    off = s.sum(axis=1) - np.diag(s)
    tau = off / off.sum()
    return np.exp(-beta * tau)


def layer_ratios(importance: np.ndarray, s_t: float, delta: float,
                 lower: Optional[Sequence[float]] = None) -> List[float]:
    from scipy import optimize

    imp = np.asarray(importance, dtype=np.float64)
    n = len(imp)
    lo = np.full(n, s_t - delta)
    if lower is not None:                # zeros already there stay: a layer never goes below its current ratio
        lo = np.maximum(lo, np.asarray(lower, dtype=np.float64))
        if lo.mean() > s_t + 1e-12:
            raise ValueError(f"LoSA: the layers' current ratios (mean {lo.mean():.6f}) already exceed the round's "
                             f"target {s_t:.6f}")
    hi = np.maximum(s_t + delta, lo)
    result = optimize.minimize(lambda x: float(np.dot(x, imp)), x0=np.ones(n), jac=lambda x: imp, method="SLSQP",
                               bounds=list(zip(lo, hi)),
                               constraints=({"type": "eq", "fun": lambda x: np.mean(x) - s_t},))
    x = result.x if lower is None else np.maximum(result.x, lo)
    return [max(0.0, float(v)) for v in x]


def integer_counts(ratios: Sequence[float], cols: int, total: int, lower: Sequence[int]) -> List[int]:
    x = np.asarray(ratios, dtype=np.float64) * cols
    lo = np.asarray(lower, dtype=np.int64)
    k = np.clip(np.maximum(np.floor(x + 1e-9).astype(np.int64), lo), 0, cols)
    if lo.sum() > total or total > cols * len(k):
        raise ValueError(f"LoSA: cannot prune exactly {total} entries per row-sum (already {lo.sum()}, "
                         f"at most {cols * len(k)})")
    while k.sum() != total:
        rem = x - k
        if k.sum() < total:              # too few: +1 where the ratio asks most above its count
            cand = np.where(k < cols)[0]
            i = cand[np.argmax(rem[cand])]
            k[i] += 1
        else:                            # too many: −1 where the count is most above the ratio (never below lower)
            cand = np.where(k > lo)[0]
            i = cand[np.argmin(rem[cand])]
            k[i] -= 1
    return [int(v) for v in k]


def reconstruction_error(dense: torch.Tensor, sparse: torch.Tensor) -> float:
    d = dense.float().reshape(-1, dense.shape[-1])
    s = sparse.float().reshape(-1, sparse.shape[-1])
    scale = torch.linalg.norm(d, dim=0)
    return float((((d - s) / scale) ** 2).sum() / d.shape[-1])


def allocate_ranks(errors: Sequence[float], omega: float, lo: int = 1, hi: int = 16) -> List[int]:
    e = np.asarray(errors, dtype=np.float64)
    n = len(e)
    ranks = np.clip(np.round(e / e.sum() * omega * n), lo, hi).astype(int)
    diff = int(ranks.sum() - omega * n)
    if diff > 0:                         # too many: take 1 from the smallest errors first
        idx = np.where(ranks > lo)[0]
        order, step = idx[np.argsort(e[idx])], -1
    else:                                # too few: give 1 to the largest errors first
        idx = np.where(ranks < hi)[0]
        order, step = idx[np.argsort(-e[idx])], 1
    for i in order:                      # one pass: each layer moves by at most 1
        if diff == 0:
            break
        ranks[i] += step
        diff += step
    return [int(r) for r in ranks]


def omega(round_index: int, omega0: float = 6) -> float:
    """Ω_t = Ω₁ + (t − 1): the mean rank grows by one per round (main.py:152, `iter_mean_rank += 1`)."""
    return omega0 + (round_index - 1)


__all__ = ["round_sparsity", "band_halfwidth", "linear_cka", "cka_matrix", "layer_importance", "layer_ratios",
           "integer_counts", "reconstruction_error", "allocate_ranks", "omega"]
