"""Wanda (Sun et al., ICLR 2024): score |W_ij| · ‖X_j‖₂, compared within each output row.

Reference: locuslab/wanda lib/prune.py (prune_wanda, return_given_alpha) and lib/layerwrapper.py (WrappedGPT).
Sample config: `python -m repro.run env=offline score=wanda sparsity=0.5` (`score.use_variant=true` for the
appendix variant; `pattern=nm_2_4 sparsity=0.5` for 2:4).

- `sq_norm` is the references' `scaler_row` = (1/N) Σ_n Σ_t x²; the score is |W| (upcast to fp32) times its
  square root, as the reference's fp16·fp32 product.
- Masks: stable ascending sort per row, prune the first int(cols·s) (shared mask builders); N:M within groups
  of M consecutive input columns; per-row tensor targets (allocators) through the shared per-row rule.
- `use_variant` (reference lines 178-196): ONE α for the whole layer (not one per row), binary search on
  [0, 0.8] starting at 0.4: row r prunes the weights whose score is <= the largest sorted score whose cumulative
  sum is <= α · (row sum); stop when |layer sparsity − s| <= 0.001 or the interval is < 0.001. N:M takes
  precedence over the variant, as in the reference.

Deviation: when no score of a row passes α·sum (cumsum of the smallest score already > α·sum), the reference
gathers index −1 (an error); we prune nothing in that row.
"""
from dataclasses import dataclass

import torch

from repro.methods.base import MethodConfig, Scorer
from repro.prune.masks import build_mask
from repro.registry import register


@dataclass
class WandaConfig(MethodConfig):
    name: str = "wanda"
    use_variant: bool = False            # the appendix's cumulative-score variant (reference --use_variant)


def wanda_score(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """The Wanda metric |W| · ‖X_j‖₂ in fp32 — the one definition used by every scorer and allocator that needs it
    (DSnoT, multiflow, OWL, Lua-LLM)."""
    return weight.abs().to(torch.float32) * torch.sqrt(sq_norm.to(torch.float32)).view(1, -1)


def _mask_given_alpha(alpha: float, sorted_scores: torch.Tensor, cumsum: torch.Tensor, row_sum: torch.Tensor,
                      score: torch.Tensor):
    passing = (cumsum <= (row_sum * alpha).reshape(-1, 1)).sum(dim=1, keepdim=True)
    thresh = torch.gather(sorted_scores, 1, (passing - 1).clamp(min=0))
    thresh = torch.where(passing > 0, thresh, torch.full_like(thresh, -float("inf")))
    mask = score <= thresh
    return mask, mask.sum() / mask.numel()          # a float32 tensor, compared in float32 like the reference


def variant_mask(score: torch.Tensor, sparsity: float, tol: float = 0.001) -> torch.Tensor:
    """Wanda's `use_variant`: the α bisection of locuslab/wanda lib/prune.py:178-196 ."""
    sorted_scores = torch.sort(score, dim=-1, stable=True)[0]
    cumsum = torch.cumsum(sorted_scores, dim=1)
    row_sum = score.sum(dim=1)
    alpha, lo, hi = 0.4, 0.0, 0.8
    mask, cur = _mask_given_alpha(alpha, sorted_scores, cumsum, row_sum, score)
    while bool(torch.abs(cur - sparsity) > tol) and hi - lo >= tol:
        if bool(cur > sparsity):
            alpha, hi = (alpha + lo) / 2.0, alpha
        else:
            alpha, lo = (alpha + hi) / 2.0, alpha
        mask, cur = _mask_given_alpha(alpha, sorted_scores, cumsum, row_sum, score)
    return mask


@register("score", "wanda", WandaConfig)
class Wanda(Scorer):
    needs_calibration = True
    stats = frozenset({"sq_norm"})

    def score(self, name, weight, stats):
        return wanda_score(weight, stats["sq_norm"])

    @torch.no_grad()
    def prune_layer(self, name, linear, stats, target, pattern) -> None:
        w = linear.weight.data
        score = self.score(name, w, stats)
        nm = pattern is not None and pattern.name == "nm"
        if self.cfg.use_variant and not nm:
            if isinstance(target, torch.Tensor):
                raise ValueError(f"{name}: score.use_variant searches one α per layer; it cannot take the "
                                 f"per-row targets this allocation produced")
            mask = variant_mask(score, float(target))
        else:
            mask = build_mask(score, target, pattern, self.granularity)
        w[mask] = 0
