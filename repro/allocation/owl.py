"""OWL — Outlier Weighed Layerwise sparsity (Yin et al., ICML 2024): denser blocks where Wanda scores have outliers.

References: luuyin/OWL lib/prune_all.py:853-1109 (dense outlier pass, `check_outlier_mean`, min-max map, clamp),
eliacunegatti/NeuroAL lib/utils.py:206-244 + 316-389 (`get_sparsity_owl`, `run_activation`).
Sample config: `python -m repro.run env=offline allocation=owl score=wanda sparsity=0.7`
(`allocation.clamp=neuronal` for NeuronAL's copy; `score=sparsegpt` for OWL w. SparseGPT).

1. One dense pass of the calibration set through the shared engine (`engine.propagate=dense` semantics, one group
   per block): for block l, the Wanda scores |W|·‖X_j‖₂ of *all* its linears are concatenated and
   D_l = 100 · #{S > M · mean(S)} / #S.
2. s_l = 1 − ρ_l with ρ = minmax(D)·2λ − mean + (1 − s): one sparsity per block, shared by its linears.
3. Clamp (a config choice, the references differ): `owl` (default) s_l <= 0 → 0.01, no upper clamp (OWL);
   `neuronal` [0.01, 0.99] (NeuroAL); `none`.
Defaults M = 5, λ = 0.08 (OWL README and NeuronAL; OWL's argparse default M = 3 is not what the paper ran).

Deviations: the calibration sequences are forwarded in batches of `calib.batch_size` (statistics equal up to
float rounding); when all blocks have the same outlier ratio the allocation is uniform (reference: NaN).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from repro.allocation._ratio_maps import CLAMPS, outlier_ratio, owl_sparsities
from repro.config import check_choice, check_range
from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.methods.wanda import wanda_score
from repro.prune.engine import BlockCallback, BlockContext
from repro.registry import register

log = logging.getLogger(__name__)


@dataclass
class OwlConfig(MethodConfig):
    name: str = "owl"
    M: float = 5.0                       # outlier threshold: score > M · mean(score)  (reference --Hyper_m)
    lam: float = 0.08                    # λ: block sparsities lie in [s − λ, s + λ]   (reference --Lamda)
    clamp: str = "owl"                   # owl | neuronal | none
    nsamples: Optional[int] = None       # calibration sequences for the outlier pass; None = all (the references)

    def __post_init__(self):
        check_range("allocation.M", self.M, lo=0.0, lo_open=True)
        check_range("allocation.lam", self.lam, lo=0.0, hi=1.0)
        check_choice("allocation.clamp", self.clamp, CLAMPS)
        if self.nsamples is not None:
            check_range("allocation.nsamples", self.nsamples, lo=1)


class _OutlierPass(BlockCallback):
    """Looks only: the outlier ratio of each block's concatenated Wanda scores."""
    stats = frozenset({"sq_norm"})

    def __init__(self, m: float):
        self.m = m
        self.ratios: List[float] = []

    def on_group(self, ctx: BlockContext) -> None:
        scores = [wanda_score(lin.weight.detach(), ctx.stats[rel]["sq_norm"]) for rel, lin in ctx.linears.items()]
        self.ratios.append(outlier_ratio(scores, self.m))


def block_outlier_ratios(ctx: AllocationContext, m: float, nsamples: Optional[int]) -> List[float]:
    """Dense pass over the calibration set (all linears of a block in one group)."""
    return ctx.run_pass(_OutlierPass(m), nsamples).ratios


@register("allocation", "owl", OwlConfig)
class Owl(Allocator):
    needs_calibration = True

    def allocate(self, ctx: AllocationContext) -> Dict[str, float]:
        ratios = block_outlier_ratios(ctx, self.cfg.M, self.cfg.nsamples)
        per_block = owl_sparsities(ratios, ctx.run.sparsity, self.cfg.lam, self.cfg.clamp)
        ctx.report.update({"outlier_ratios": ratios, "block_sparsity": per_block})
        log.info("OWL block sparsities: %s", ", ".join(f"{s:.3f}" for s in per_block))
        return ctx.adapter.block_targets(ctx.model, per_block)
