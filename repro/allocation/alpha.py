"""AlphaPruning (Lu et al., NeurIPS 2024): layer sparsity from the heavy-tail exponent α of each weight's ESD.

References: haiquanlu/AlphaPruning lib/esd_utils.py:69-184 (`net_esd_estimator`, fix_fingers='xmin_peak',
filter_zeros=False), lib/prune.py:152-187 (`ww_sparsity`, mapping_type block_wise); NeuroAL
sparsity_distribution.py:156-376 (its copy). Sample config:
`python -m repro.run env=offline allocation=alpha score=wanda sparsity=0.7 allocation.epsilon=0.2`.

1. Per prunable linear: eigenvalues = svdvals(W in fp32)², Hill estimator at the KS-optimal xmin searched from the
   log10-histogram peak (`repro.allocation._ratio_maps.hill_alpha_peak`).
2. `mapping=block_wise` (default): unweighted mean of α over a block's linears, broadcast to them; `layer_wise`:
   each linear keeps its own α.
3. Min-max α → [1 − ε, 1 + ε], rescaled so the *parameter-weighted* mean sparsity is s. Higher α → more pruning.
No calibration data: the allocation depends on the weights only.

Choices where the references differ or err (documented, config-selectable):
- ε: the reference scripts use 0.3 with magnitude and 0.2 with Wanda/SparseGPT (scripts/llama_7b.sh); NeuronAL's
  code reads an undefined `args.epsilon` (AttributeError). Default 0.3 (ALP argparse); the experiment files set
  0.2 for Wanda/SparseGPT/multiflow bases and 0.3 for magnitude (see experiments/neuronal/NOTES.md).
- `log10_xmin_quirk=true` (default) replicates the reference's lower xmin bound log10(0.95·peak) compared with raw
  eigenvalues (it moves α, hence the numbers); false uses 0.95·peak.
- `clamp=false` (default, reference): a layer may get sparsity > 1 at high s (fully pruned by the row rule, which
  takes int(cols·s) ≥ cols); `clamp=true` limits to [0, 0.99].
The reference loads α from a precomputed `alpha_peak.npy` (float32 `svdvals(W)²`); we compute it on the fly as the
eigenvalues of the smaller Gram matrix W Wᵀ in float64 (`eigvalsh`, ~10x faster than `svdvals` on CPU here; equal
to svdvals² within ~1e-6 of the largest eigenvalue, tests/test_allocation_maps.py) and cache nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict

import torch
from tqdm.auto import tqdm

from repro.allocation._ratio_maps import alpha_sparsities, hill_alpha_peak
from repro.config import check_choice, check_range
from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.registry import register

log = logging.getLogger(__name__)


@dataclass
class AlphaConfig(MethodConfig):
    name: str = "alpha"
    epsilon: float = 0.3                 # sparsity ratios span [1 − ε, 1 + ε] before the rescale
    mapping: str = "block_wise"          # block_wise | layer_wise
    clamp: bool = False                  # the reference does not clamp
    log10_xmin_quirk: bool = True        # replicate esd_utils.py's log10 lower bound
    bins: int = 100                      # histogram bins of the xmin_peak search

    def __post_init__(self):
        check_range("allocation.epsilon", self.epsilon, lo=0.0, hi=1.0)
        check_choice("allocation.mapping", self.mapping, ("block_wise", "layer_wise"))
        check_range("allocation.bins", self.bins, lo=2)


@torch.no_grad()
def layer_alphas(named_linears: Dict[str, torch.nn.Linear], bins: int, quirk: bool) -> Dict[str, float]:
    out = {}
    for name, lin in tqdm(named_linears.items(), desc="ESD alpha", unit="linear"):
        out[name] = hill_alpha_peak(esd(lin.weight), bins=bins, log10_xmin_quirk=quirk)
    return out


@torch.no_grad()
def esd(weight: torch.Tensor) -> torch.Tensor:
    """Squared singular values of W as the eigenvalues of the smaller Gram matrix, in float64."""
    w = weight.detach().to(torch.float64)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(gram).clamp_min(torch.finfo(torch.float32).tiny).to(torch.float32).cpu()


@register("allocation", "alpha", AlphaConfig)
class AlphaPruning(Allocator):
    def allocate(self, ctx: AllocationContext) -> Dict[str, float]:
        linears = ctx.adapter.all_linears(ctx.model)
        alphas = layer_alphas(linears, self.cfg.bins, self.cfg.log10_xmin_quirk)
        names = list(linears)
        metrics = [alphas[n] for n in names]
        if self.cfg.mapping == "block_wise":
            per_block = len(ctx.adapter.linear_names)
            means = [sum(metrics[i:i + per_block]) / per_block for i in range(0, len(metrics), per_block)]
            metrics = [m for m in means for _ in range(per_block)]
        sparsities = alpha_sparsities(metrics, [linears[n].weight.numel() for n in names], ctx.run.sparsity,
                                      self.cfg.epsilon, self.cfg.clamp)
        over = [n for n, s in zip(names, sparsities) if s >= 1.0]
        if over:
            log.warning("AlphaPruning: %d linears get sparsity >= 1 (fully pruned; reference behaviour, "
                        "allocation.clamp=true limits it)", len(over))
        ctx.report.update({"alpha": alphas, "sparsity": dict(zip(names, sparsities))})
        return dict(zip(names, sparsities))
