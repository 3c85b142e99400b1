"""Wanda (Sun et al., ICLR 2024): score |W_ij| · ‖X_j‖₂, compared within each output row.

Reference: locuslab/wanda lib/prune.py (prune_wanda) and lib/layerwrapper.py (WrappedGPT). `sq_norm` is the
references' `scaler_row` = (1/N) Σ_n Σ_t x²; the score uses its square root. Masks: stable ascending sort per row,
prune the first int(cols·s) (shared mask builders); N:M within groups of M input columns.
"""
from dataclasses import dataclass

import torch

from repro.methods.base import MethodConfig, Scorer
from repro.registry import register


@dataclass
class WandaConfig(MethodConfig):
    name: str = "wanda"


@register("score", "wanda", WandaConfig)
class Wanda(Scorer):
    needs_calibration = True
    stats = frozenset({"sq_norm"})

    def score(self, name, weight, stats):
        return weight.abs().to(torch.float32) * torch.sqrt(stats["sq_norm"].to(torch.float32)).view(1, -1)
