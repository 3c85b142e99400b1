"""EoRA's math (Liu et al., "EoRA: Training-free Compensation for Compressed LLM with Eigenspace Low-Rank
Approximation", arXiv 2410.21271; NVlabs/EoRA@11ff6c0 EoRA/eora.py `llama_sequential_eigen`), as pure functions.

A linear y = x Wᵀ whose weight W (out × in) was compressed to W_c leaves the error ΔW = W − W_c. With the inputs'
second-moment matrix C = (1/N) Σ xᵀx = Q Λ Qᵀ (in × in) the output error of a correction L is
‖(ΔW − L) Xᵀ‖²_F ∝ tr((ΔW − L) C (ΔW − L)ᵀ) = ‖(ΔW − L) S‖²_F with S = Q Λ^{1/2}. Its best rank-r L is therefore
the truncated SVD in the eigenspace, mapped back:

    ΔW S = U Σ Vᵀ,    B = U_r Σ_r^{1/2}  (out × r),    A = Σ_r^{1/2} V_rᵀ S⁻¹  (r × in),    S⁻¹ = Λ^{-1/2} Qᵀ

and W_c + B A is the compensated weight (B A stored as a LoRA pair: lora_B = B, lora_A = A, scaling 1).

Numerics as the reference: C and its eigendecomposition in float64; non-positive eigenvalues replaced by the
smallest positive one (the reference replaces only negative ones; a zero eigenvalue would divide by zero there);
S and S⁻¹ cast to float32, the SVD in float32. `damp` (default 0, as NVlabs/EoRA) adds damp·mean(diag C) to the
diagonal first, as ModelCloud/GPTQModel's EoRA port does with 0.01. `svd_factors` is the paper's "SVD" baseline
(the reference's `--lowrank_method svd`): the plain truncated SVD of ΔW, blind to the activations.
"""
from __future__ import annotations

from typing import Tuple

import torch


def eigen_scaling(cov: torch.Tensor, damp: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """S = Q Λ^{1/2} and S⁻¹ = Λ^{-1/2} Qᵀ of the (damped) second-moment matrix `cov`, both float32."""
    c = cov.double()
    if damp:
        c = c + torch.eye(c.shape[0], dtype=c.dtype, device=c.device) * (damp * torch.diagonal(c).mean())
    lam, q = torch.linalg.eigh(c)
    positive = lam[lam > 0]
    if positive.numel() == 0:
        raise ValueError("the activation second-moment matrix has no positive eigenvalue (all inputs zero?)")
    lam = torch.where(lam > 0, lam, positive.min())
    root = lam.sqrt()
    return (q * root).float(), (q / root).t().float()


def eora_factors(delta: torch.Tensor, cov: torch.Tensor, rank: int, damp: float = 0.0, scaling=None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(A, B), A: rank × in, B: out × rank, with B A the eigenspace rank-`rank` approximation of `delta`.
    `scaling`: a precomputed `eigen_scaling(cov, damp)` (linears that share one input share it)."""
    s, s_inv = scaling if scaling is not None else eigen_scaling(cov, damp)
    s, s_inv = s.to(delta.device), s_inv.to(delta.device)
    u, sig, vt = torch.linalg.svd(delta.float() @ s, full_matrices=False)
    root = sig[:rank].sqrt()
    b = u[:, :rank] * root
    a = root[:, None] * (vt[:rank] @ s_inv)
    return a, b


def svd_factors(delta: torch.Tensor, rank: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the plain truncated SVD of `delta` (the paper's SVD baseline)."""
    u, sig, vt = torch.linalg.svd(delta.float(), full_matrices=False)
    root = sig[:rank].sqrt()
    return root[:, None] * vt[:rank], u[:, :rank] * root


def weighted_error(residual: torch.Tensor, cov: torch.Tensor) -> float:
    """tr(R C Rᵀ): the squared output error of a weight residual R on inputs with second moments C."""
    r = residual.double()
    return float(torch.einsum("oi,ij,oj->", r, cov.double(), r))
