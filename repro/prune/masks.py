"""Mask builders: pure functions from a score matrix and a sparsity target to a boolean mask (True = prune).

Scores are `[rows = outputs, cols = inputs]`; low score = pruned first. Conventions follow the references:
- per row (Wanda, DSnoT, NeuronAL's row-wise magnitude): stable ascending sort of each row, prune the first
  `int(cols · s)` entries (locuslab/wanda lib/prune.py);
- per layer (magnitude in Wanda/OWL/AlphaPruning/SparseGPT `--gmp`): `t = sort(score.flatten())[int(numel · s)]`,
  prune every entry `<= t` — ties at the threshold are all pruned, so the layer can end up slightly sparser
  (and the k-th entry itself goes too: int(numel·s) + 1 at least). Deviation: a target of exactly 0 prunes
  nothing (the reference's `<= sort[0]` would still prune the minimum);
- per-row targets (NeuronAL's neuron granularity): stable *descending* sort, keep `floor((1 − s_r) · cols)`;
- a fixed mask (a boolean tensor of the weight's shape, True = prune; Lua-LLM's learned hard masks) is applied
  as it is, whatever the scores and the pattern;
- N:M: in every group of M consecutive input columns of a row, prune the N lowest (`torch.topk`, largest=False).
  One vectorised `topk` over all groups instead of the references' loop over column groups; on CPU it breaks
  ties exactly like the loop (tests/test_masks.py, tie-heavy scores); on CUDA this is untested, and ties could
  break differently there (the chosen *values* are the same).
"""
from __future__ import annotations

from typing import Union

import torch

Target = Union[float, torch.Tensor]      # a layer's sparsity, one sparsity per output row, or a fixed bool mask


def is_fixed_mask(target) -> bool:
    """A target that is already the mask (bool tensor, True = prune), not a sparsity."""
    return isinstance(target, torch.Tensor) and target.dtype == torch.bool


def prune_lowest_per_row(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    rows, cols = score.shape
    k = int(cols * sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(score, dim=-1, stable=True)[1][:, :k]
        mask.scatter_(1, idx, True)
    return mask


def kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """`sort(flat)[k]` (0-based), the references' threshold. On CUDA a full sort: `kthvalue` selects one large
    slice in a single thread block (3.4 ms for 1.4 M entries on an H100, half of SparseGPT's GPU time in the
    LLaMA-2-7B profile, benchmarks/RESULTS.md). Elsewhere quickselect (`kthvalue`), cheaper than a sort. Same value."""
    if flat.is_cuda:
        return torch.sort(flat).values[k]
    return torch.kthvalue(flat, k + 1).values


def prune_up_to_kth(score: torch.Tensor, k: int) -> torch.Tensor:
    """`score <= sort(score)[k]` over the whole matrix: k + 1 entries, more on ties (the references' rule)."""
    return score <= kth_smallest(score.flatten(), min(k, score.numel() - 1))


def prune_below_layer_threshold(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(score.numel() * sparsity)
    if k == 0:
        return torch.zeros_like(score, dtype=torch.bool)
    return prune_up_to_kth(score, k)


def keep_highest_per_row(score: torch.Tensor, row_sparsity: torch.Tensor) -> torch.Tensor:
    """Per-row targets: row r keeps its `floor((1 - s_r) · cols)` highest scores (stable descending order)."""
    rows, cols = score.shape
    keep = torch.floor((1 - row_sparsity.to(torch.float64)) * cols).to(torch.long).to(score.device)
    order = torch.sort(score, dim=-1, descending=True, stable=True)[1]
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(cols, device=score.device).expand(rows, cols))
    return rank >= keep.view(-1, 1)


def prune_n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"N:M pattern {n}:{m} needs the input dimension to be a multiple of {m}; got {cols}")
    groups = score.view(rows, cols // m, m)
    idx = torch.topk(groups, n, dim=-1, largest=False)[1]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.view(rows, cols)


def build_mask(score: torch.Tensor, target: Target, pattern, granularity: str = "row") -> torch.Tensor:
    """Dispatch on the target type (fixed mask, per-row tensor), the pattern (N:M) and the comparison group."""
    if is_fixed_mask(target):
        if target.shape != score.shape:
            raise ValueError(f"fixed mask of shape {tuple(target.shape)} for a weight of shape {tuple(score.shape)}")
        return target.to(score.device)
    if pattern is not None and pattern.name == "nm":
        return prune_n_of_m(score, pattern.n, pattern.m)
    if isinstance(target, torch.Tensor):
        return keep_highest_per_row(score, target)
    if granularity == "row":
        return prune_lowest_per_row(score, float(target))
    if granularity == "layer":
        return prune_below_layer_threshold(score, float(target))
    raise ValueError(f"unknown mask granularity {granularity!r}; valid: 'row', 'layer'")


def sparsity_of(weight: torch.Tensor) -> float:
    return float((weight == 0).sum().item()) / weight.numel()
