"""Magnitude pruning: score |W_ij|, no calibration.

`granularity` picks the comparison group, because the references disagree (baselines_neuronal.md §c):
- `layer` (default; Wanda, OWL, AlphaPruning and SparseGPT `--gmp`): one threshold per matrix,
  `t = sort(|W|)[int(numel·s)]`, prune `|W| <= t` — ties at t are all pruned;
- `row` (NeuronAL's `prune_magnitude`): prune the `int(cols·s)` smallest of each output row (stable sort).
N:M and per-row targets go through the shared mask builders. On GGUF-dequantised weights (SmolLM2) |W| has many
exact ties, so the `<=` rule over-prunes a little: the record's measured sparsity shows it.
"""
from dataclasses import dataclass

from repro.config import check_choice
from repro.methods.base import MethodConfig, Scorer
from repro.registry import register


@dataclass
class MagnitudeConfig(MethodConfig):
    name: str = "magnitude"
    granularity: str = "layer"

    def __post_init__(self):
        check_choice("score.granularity", self.granularity, ("layer", "row"))


@register("score", "magnitude", MagnitudeConfig)
class Magnitude(Scorer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.granularity = cfg.granularity

    def score(self, name, weight, stats):
        return weight.abs()
