"""Multiflow scores (as NeuronAL uses them as a base): |W| reweighted by output- and input-neuron importance.

Reference: eliacunegatti/NeuroAL lib/prune.py:652-728 (`prune_multiflow`) and lib/neuroal.py:141-146.
Sample config: `python -m repro.run env=offline score=multiflow sparsity=0.7` (any `allocation=...`).

With a = ‖X_j‖₂ (Wanda's activation norm, `sq_norm`): I_out = rowmean(|W|·a), I_in = colmean(|W|·a) and the
score is |W| ⊙ (I_out I_inᵀ) — the outer product multiplies |W|, not |W|·a, as in the reference. Masks compare
within output rows (stable ascending sort, int(cols·s)); per-row targets and N:M through the shared builders.
No deviation known.
"""
from dataclasses import dataclass

import torch

from repro.methods.base import MethodConfig, Scorer
from repro.methods.wanda import wanda_score
from repro.registry import register


@dataclass
class MultiflowConfig(MethodConfig):
    name: str = "multiflow"


def multiflow_score(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    magnitude = weight.abs().to(torch.float32)
    flow = wanda_score(weight, sq_norm)
    return magnitude * torch.outer(flow.mean(dim=1), flow.mean(dim=0))


@register("score", "multiflow", MultiflowConfig)
class Multiflow(Scorer):
    needs_calibration = True
    stats = frozenset({"sq_norm"})
    granularity = "row"

    def score(self, name, weight, stats):
        return multiflow_score(weight, stats["sq_norm"])
