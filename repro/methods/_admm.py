"""Pure math shared by ALPS (`repro/methods/alps.py`) and MOSP (`repro/methods/mosp.py`): the normalised
layer-wise problem, the support projections, the ADMM loops and the masked batched conjugate gradient.

Re-expressed from mazumder-lab/ALPS `alps.py` (HEAD 8af9e6b: `ALPS_prune.ALPS_admm`, `cg_batch`); the research
note shared/research/lua_mosp.md §3 describes it. Layout as in the reference: the variable is B = (W·x)ᵀ
[d_in, d_out] (W [d_out, d_in] scaled column-wise by the input norms x, transposed), the problem matrix is the
normalised Gram A = D⁻¹(H + δI)D⁻¹ [d_in, d_in], the right-hand side A·B̂.

Every float operation that decides a support (the order of `(V + ρB)/ρ`, `topk(−Z², numel − k)` to zero the
smallest, the eigen-inverse rebuilt in float64 then cast) is the reference's, so on CPU our masks and weights equal
the reference's bit for bit (tests/test_alps.py against tests/golden/alps_reference.pt).

Deviations (no effect on any number we could find): the support change is counted in integers (the reference
sums a float32 vector of 0/1 squares, inexact beyond 2²⁴ changed positions); the reference's diagnostic
objective values (`errorc`, `Res`), printed nowhere, are not computed; `A @ P` is computed once per CG step (the
reference computes the same product twice).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from repro.prune.masks import kth_smallest

Tensor = torch.Tensor


# ---------------------------------------------------------------- the normalised problem (ALPS_admm lines 1-3)

def ridge_normalize(H: Tensor, ridge: float = 0.01) -> Tuple[Tensor, Tensor]:
    """(A, x): H + ridge·mean(diag H)·I, then x = sqrt(diag) + 1e-8 and A = D⁻¹(H + δI)D⁻¹, in float32.

    The result does not depend on the scale of H (up to the 1e-8 and float rounding): the engine's
    H = (2/N) Σ xxᵀ and the reference's Σ xxᵀ give the same A and the same pruned weights."""
    H = H.to(torch.float32).clone()
    damp = ridge * torch.mean(torch.diag(H)).item()
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp
    x = torch.diag(H).sqrt() + 1e-8
    A = H / x
    return (A.T / x).T, x


@dataclass
class EigenInverse:
    """(A + ρI)⁻¹ for any ρ from one float64 eigendecomposition of A (rebuilt whenever ρ changes)."""
    L: Tensor
    Q: Tensor

    @classmethod
    def of(cls, A: Tensor) -> "EigenInverse":
        L, Q = torch.linalg.eigh(A.double())
        return cls(L, Q)

    def inverse(self, rho: float, device=None) -> Tensor:
        Q = self.Q
        return (Q @ ((1 / (self.L + rho)) * Q).T).float().to(device or Q.device)


# ---------------------------------------------------------------- projections

@dataclass(frozen=True)
class Pattern:
    """Which supports a projection may return: `keep` entries of the whole matrix (unstructured) or, with
    `m > 0`, `keep` entries in every group of `m` consecutive inputs of one output (N:M, keep = M − N)."""
    keep: float                  # kept count (unstructured: of the matrix; N:M: per group)
    m: int = 0

    @property
    def nm(self) -> bool:
        return self.m > 0


def _grouped(Z: Tensor, m: int) -> Tensor:
    return Z.t().reshape(-1, m)                          # [d_out · d_in / m, m]: the reference's N:M view


def _ungrouped(G: Tensor, shape) -> Tensor:
    d_in, d_out = shape
    return G.reshape(d_out, d_in).t()


def _smallest(s: Tensor, n: int):
    """Where `topk(−s, n)` would point: the n smallest entries of the flat `s`. A k-th-value threshold when it
    decides the set alone (no tie straddles it — then every rule picks the same entries), else topk itself (its
    tie-breaking is the reference's). The threshold is 5x cheaper than a half-size topk on CPU."""
    if s.is_cuda:
        return torch.topk(-s, n)[1]
    thr = kth_smallest(s, n - 1)
    below, at = s < thr, s == thr
    if int(below.sum()) + int(at.sum()) == n:
        return below | at
    return torch.topk(-s, n)[1]


def project(Z: Tensor, pat: Pattern, score: Optional[Tensor] = None) -> Tensor:
    """Z with all but its `pat.keep` highest scores zeroed (score = Z² unless given, same layout as Z).

    The reference's rule: `topk(−score, numel − keep)` picks the entries to zero (its tie-breaking included)."""
    s = Z ** 2 if score is None else score
    if not pat.nm:
        out = Z.reshape(-1).clone()
        n_zero = out.numel() - int(pat.keep)
        if n_zero > 0:
            out[_smallest(s.reshape(-1), n_zero)] = 0
        return out.reshape(Z.shape)
    G, S = _grouped(Z, pat.m), _grouped(s, pat.m)
    n_zero = pat.m - int(pat.keep)
    if n_zero > 0:
        G = G.scatter(1, torch.topk(-S, n_zero, dim=1)[1], 0.0)
    return _ungrouped(G, Z.shape)


def project_inside(Z: Tensor, pat: Pattern, support: Tensor) -> Tensor:
    """P_{k|S}: the `pat.keep` largest |Z| among the positions of `support` (bool, Z's layout); zero elsewhere.
    MOSP's core projection (k = αk inside the current shared support). Requires keep <= |S| (per group)."""
    score = torch.where(support, Z ** 2, torch.full_like(Z, -1.0))
    return project(Z, pat, score) * support


def project_with_core(Z: Tensor, pat: Pattern, core: Tensor) -> Tensor:
    """P_{k,S_c}: every position of `core` plus the largest |Z| outside it, `pat.keep` in all (MOSP stage 2)."""
    score = torch.where(core, torch.full_like(Z, float("inf")), Z ** 2)
    return project(Z, pat, score)


def support_change(zero_now: Tensor, zero_before: Tensor) -> int:
    return int((zero_now != zero_before).sum().item())


# ---------------------------------------------------------------- ALPS's ADMM loop, optionally with MOSP's core

@dataclass
class AdmmSchedule:
    """ALPS's ρ schedule and stopping rules (the reference's `ALPS_admm` defaults)."""
    rho: float = 0.1
    max_iter: int = 300
    update_iter: int = 3
    switch_iter: int = 30
    rho_max: float = 1e6


@dataclass
class AdmmResult:
    B: Tensor                    # the last primal iterate, projected on the pattern (ALPS's final step 6)
    D: Tensor                    # the last split variable (its support is the shared support S)
    core: Optional[Tensor]       # the core split variable D_c (MOSP stage 1), support S_c
    iterations: int
    rho: float
    restarts: int
    last: Optional[Tensor] = None  # the last primal iterate before the final projection


def admm_support(A: Tensor, eig: EigenInverse, rhs: Tensor, B0: Tensor, pat: Pattern,
                 sched: AdmmSchedule = AdmmSchedule(), core_pat: Optional[Pattern] = None) -> AdmmResult:
    """min (B − B̂)ᵀA(B − B̂) s.t. B on `pat`, by ALPS's ADMM: B = (A + ρI)⁻¹(rhs − V + ρD), D = P((V + ρB)/ρ),
    V += ρ(B − D); every `update_iter` iterations the support change s of D sets ρ (s/k > 0.1: ×1.3,
    > 0.005: ×1.2, ≥ 1: ×1.1 once ρ has grown, else ρ/5 and a restart from B̂, D₀, V = 0; s = 0: stop once ρ has
    grown, else ρ/5), ρ <= rho_max, and after `switch_iter` iterations s/k < 3e-4 stops.

    With `core_pat` (MOSP stage 1, the "dual ADMM"), a second sequence (B_c, D_c, V_c) runs on the same (A + ρI)⁻¹
    and ρ, with D_c = P_{αk | supp(D)}((V_c + ρB_c)/ρ): its support S_c stays inside the current shared support.
    The ρ schedule follows the shared sequence; a restart restarts both.
    """
    rho = sched.rho
    inv = eig.inverse(rho, A.device)
    numel = B0.numel()
    k = pat.keep if not pat.nm else numel * pat.keep / pat.m
    D = D_init = project(B0, pat)
    zero_before = D == 0
    V = torch.zeros_like(B0)
    B = B0
    with_core = core_pat is not None
    if with_core:
        Dc = Dc_init = project_inside(B0, core_pat, D_init != 0)
        Vc = torch.zeros_like(B0)
    grown, restarts, it = False, 0, 0
    for it in range(sched.max_iter):
        B = inv @ (rhs - V + rho * D)
        D = project((V + rho * B) / rho, pat)
        V = V + rho * (B - D)
        if with_core:
            Bc = inv @ (rhs - Vc + rho * Dc)
            Dc = project_inside((Vc + rho * Bc) / rho, core_pat, D != 0)
            Vc = Vc + rho * (Bc - Dc)
        if (it + 1) % sched.update_iter:
            continue
        zero_now = D == 0
        s = support_change(zero_now, zero_before)
        if s / k > 0.1:
            grown, rho = True, rho * 1.3
        elif s / k > 0.005:
            grown, rho = True, rho * 1.2
        elif s > 0.5:
            if grown:
                rho *= 1.1
            else:                                    # restart from the initialisation with a smaller ρ
                rho /= 5
                B, D, V = B0.clone(), D_init.clone(), torch.zeros_like(B0)
                if with_core:
                    Dc, Vc = Dc_init.clone(), torch.zeros_like(B0)
                restarts += 1
        else:
            if grown:
                break
            rho /= 5
        zero_before = zero_now                       # the pre-restart support, as the reference
        rho = min(rho, sched.rho_max)
        inv = eig.inverse(rho, A.device)
        if it >= sched.switch_iter and s / k < 0.0003:
            break
    return AdmmResult(project(B, pat), D, Dc if with_core else None, it + 1, rho, restarts, B)


# ---------------------------------------------------------------- MOSP stage 2: fixed ρ, one Cholesky

def cholesky_inverse(A: Tensor, rho: float) -> Tensor:
    """(A + ρI)⁻¹ from one float64 Cholesky factorisation, in float32 (MOSP stage 2's fixed-ρ system)."""
    Ar = A.double().clone()
    Ar.diagonal().add_(rho)
    return torch.cholesky_inverse(torch.linalg.cholesky(Ar)).float()


def admm_fixed_rho(inv: Tensor, rhs: Tensor, D0: Tensor, proj: Callable[[Tensor], Tensor], rho: float,
                   iters: int) -> Tuple[Tensor, Tensor]:
    """`iters` ADMM steps with a fixed ρ and `inv` = (A + ρI)⁻¹ (`cholesky_inverse`): B = inv(rhs − V + ρD),
    D = proj((V + ρB)/ρ), V += ρ(B − D); starts from D0 and V = 0. Returns (B, D) after the last step."""
    D, V = D0.clone(), torch.zeros_like(D0)
    B = D0
    for _ in range(iters):
        B = inv @ (rhs - V + rho * D)
        D = proj((V + rho * B) / rho)
        V = V + rho * (B - D)
    return B, D


# ---------------------------------------------------------------- ALPS's post-processing: masked batched CG

def cg_batch(A: Tensor, rhs: Tensor, support: Tensor, X0: Tensor, rtol: float = 1e-4, atol: float = 0.0,
             maxiter: int = 10) -> Tensor:
    """The reference's `cg_batch` without preconditioner: conjugate gradient on A X = rhs for every column at
    once (per-column α, β), residuals masked to `support` (0/1, X's layout), so X stays on X0's support and
    solves the normal equations restricted to it. Stops after `maxiter` steps or when every row's full residual
    norm ‖(A X − rhs)_j‖ is <= max(rtol·‖rhs_j‖, atol) (the reference's rule, norms over dim 1)."""
    mask = support.to(A.dtype)
    X = X0
    R = (rhs - A @ X) * mask
    rhs_norm = torch.norm(rhs, dim=1)
    stop = torch.max(rtol * rhs_norm, atol * torch.ones_like(rhs_norm))
    P = R_prev = None
    for step in range(1, maxiter + 1):
        if step == 1:
            P = R
        else:
            den = (R_prev * R_prev).sum(0)
            den[den == 0] = 1e-8
            beta = (R * R).sum(0) / den
            P = R + beta.unsqueeze(0) * P
        AP = A @ P
        den = (P * AP).sum(0)
        den[den == 0] = 1e-8
        alpha = (R * R).sum(0) / den
        X = X + alpha.unsqueeze(0) * P
        R_prev, R = R, (R - alpha.unsqueeze(0) * AP) * mask
        if (torch.norm(A @ X - rhs, dim=1) <= stop).all():
            break
    return X
