"""ALPS (Meng, Behdin, Wang & Mazumder, NeurIPS 2024): layer-wise pruning by ADMM with a ρ schedule, then a
masked conjugate-gradient refinement of the kept weights.

Reference: mazumder-lab/ALPS HEAD 8af9e6b, `alps.py` (`ALPS_prune.add_batch`, `ALPS_admm`, `cg_batch`) and
`llama.py`/`opt.py` (`*_sequential`: every linear of a block hooked at once, the dense block forwarded for the
statistics, every linear pruned, then the *pruned* block re-forwarded for the next block's inputs — this engine's
defaults `engine.true_sequential=false engine.propagate=pruned`). Research note shared/research/lua_mosp.md §3.
Sample config: `python -m repro.cli run env=offline score=alps sparsity=0.7` (conf/score/alps.yaml);
`pattern=nm_2_4 sparsity=0.5` for 2:4.

Per linear W [d_out, d_in] with the engine's `hessian` statistic H (the math lives in `repro/methods/_admm.py`):
1. ridge H += 0.01·mean(diag H)·I, column normalisation x = sqrt(diag H) + 1e-8, A = D⁻¹HD⁻¹; the variable is
   B = (W·x)ᵀ, the target B̂ = (Ŵ·x)ᵀ, so the top-k projection ranks |W_ij|·x_j;
2. one float64 eigendecomposition of A per shared input (q/k/v and gate/up share theirs), (A + ρI)⁻¹ rebuilt from
   it whenever ρ changes;
3. ADMM from D = P_k(B̂), V = 0, ρ₀ = 0.1: the ρ schedule, restarts and stopping rules of the reference
   (`_admm.admm_support`), at most 300 iterations;
4. final projection B = P_k(B); k = round((1 − s)·numel) kept weights (unstructured, over the whole matrix) or
   M − N per group of M consecutive inputs (N:M);
5. `cg_batch(A, A·B̂, supp(B), X0 = B, rtol = 1e-4, maxiter = 10)`: batched CG on the support;
6. W = (B/x)ᵀ in the weight's dtype.

Deviations: H is the engine's (2/N)·Σxxᵀ (the reference sums Σxxᵀ): the normalisation makes the result
scale-free (see `_admm.ridge_normalize`); the reference runs the loop on `cuda:0` with TF32 off, we run it where
the weights are (on CPU our masks and weights equal the reference's, tests/test_alps.py); a per-row sparsity
target (a row allocator) is refused: ALPS's budget is per matrix.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn as nn

from repro.config import ConfigError, check_range
from repro.methods._admm import AdmmSchedule, EigenInverse, Pattern, admm_support, cg_batch, ridge_normalize
from repro.methods.base import MethodConfig, Scorer, Target
from repro.prune.stats import LayerStats
from repro.registry import register

log = logging.getLogger(__name__)


@dataclass
class ALPSConfig(MethodConfig):
    name: str = "alps"
    rho: float = 0.1                     # ρ₀ (llama.py/opt.py pass 0.1; the CLI's --rho 300 is never used)
    max_iter: int = 300
    update_iter: int = 3                 # ρ is updated every `update_iter` iterations
    switch_iter: int = 30                # after this many iterations, s/k < 3e-4 stops
    ridge: float = 0.01                  # δ = ridge · mean(diag H)
    cg_iters: int = 10                   # post-processing CG steps
    cg_rtol: float = 1e-4

    def __post_init__(self):
        check_range("score.rho", self.rho, lo=0.0, lo_open=True)
        for name in ("max_iter", "update_iter"):
            check_range(f"score.{name}", getattr(self, name), lo=1)
        check_range("score.switch_iter", self.switch_iter, lo=0)
        check_range("score.ridge", self.ridge, lo=0.0)
        check_range("score.cg_iters", self.cg_iters, lo=0)
        check_range("score.cg_rtol", self.cg_rtol, lo=0.0, lo_open=True)

    @property
    def schedule(self) -> AdmmSchedule:
        return AdmmSchedule(self.rho, self.max_iter, self.update_iter, self.switch_iter)


def layer_pattern(numel: int, target: float, pattern) -> Pattern:
    """The reference's budget: k = round((1 − s)·numel) kept (unstructured) or M − N kept per group of M."""
    if pattern is not None and pattern.name == "nm":
        return Pattern(keep=pattern.m - pattern.n, m=pattern.m)
    return Pattern(keep=int(round((1 - float(target)) * numel)))


@dataclass
class Normalized:
    """One shared input's normalised problem: A, the column norms x and the eigendecomposition of A."""
    A: torch.Tensor
    x: torch.Tensor
    eig: EigenInverse

    @classmethod
    def of(cls, H: torch.Tensor, ridge: float) -> "Normalized":
        A, x = ridge_normalize(H, ridge)
        return cls(A, x, EigenInverse.of(A))

    def target(self, W: torch.Tensor):
        """(B̂, rhs = A·B̂) of the dense weight W [d_out, d_in], in the reference's operation order."""
        Wx = W.to(torch.float32) * self.x
        return Wx.t().clone(), (Wx @ self.A).T

    def unscale(self, B: torch.Tensor) -> torch.Tensor:
        return B.t() / self.x


@torch.no_grad()
def alps_prune(W: torch.Tensor, prob: Normalized, pat: Pattern, cfg: ALPSConfig):
    """ALPS on one weight matrix: (pruned fp32 weight [d_out, d_in], ADMM report)."""
    B0, rhs = prob.target(W)
    res = admm_support(prob.A, prob.eig, rhs, B0, pat, cfg.schedule)
    B = res.B
    if cfg.cg_iters:
        B = cg_batch(prob.A, rhs, B != 0, B, rtol=cfg.cg_rtol, maxiter=cfg.cg_iters)
    return prob.unscale(B), {"iterations": res.iterations, "rho": res.rho, "restarts": res.restarts}


@register("score", "alps", ALPSConfig)
class ALPS(Scorer):
    updates_weights = True               # ADMM + PCG update of the kept weights (stored by repro/store.py)
    needs_calibration = True
    stats = frozenset({"hessian"})

    def __init__(self, cfg):
        super().__init__(cfg)
        self.report: Dict[str, dict] = {}

    def normalized(self, stats: LayerStats) -> Normalized:
        return stats.derived(("alps_normalized", self.cfg.ridge),
                             lambda st: Normalized.of(st["hessian"], self.cfg.ridge))

    @torch.no_grad()
    def prune_layer(self, name: str, linear: nn.Linear, stats: LayerStats, target: Target, pattern) -> None:
        if isinstance(target, torch.Tensor):
            raise ConfigError("allocation", "per-row targets", "a per-layer sparsity: ALPS keeps k weights per "
                              "matrix (use a layer-wise allocation such as uniform, owl, alpha)")
        w = linear.weight.data
        prob = self.normalized(stats)
        pruned, info = alps_prune(w.to(prob.A.device), prob, layer_pattern(w.numel(), target, pattern), self.cfg)
        w.copy_(pruned.to(w.device, w.dtype))
        self.report[name] = info
        log.debug("alps %s: %s", name, info)
