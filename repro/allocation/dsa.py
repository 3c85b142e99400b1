"""DSA — Discovering Sparsity Allocation for layer-wise pruning of LLMs (Li et al., NeurIPS 2024).

DSA searches (evolution) for an *allocation function*: a chain of operations that reduces a block's element-wise
Wanda metric to one importance number, then maps the importances of all blocks to block sparsities. What the
pruning runs use is the discovered function, given as a graph string; this module evaluates such a string. The
evolutionary search itself (`--prune_method wanda_owl_evo`, population 100, 2000 iterations, one prune and
evaluation per candidate) is not reimplemented: the README runs the discovered function (`wanda_owl_search
--graph_string ...`), and so do we.
Reference (read, not copied): lliai/DSA @ a5ebe65 — lib/autolayer.py (`LayerEngine`: op tables, graph-string
parser, `compute_importance`), lib/prune_all.py:1947-2090 (`test_prune_wanda_outlier_use_var`: dense Wanda metric
per block, importance, the λ map, clamp), main.py (`--prune_method wanda_owl_search --graph_string ...`,
`--Lamda` default 0.08). Sample config:
`python -m repro.run env=offline allocation=dsa score=wanda sparsity=0.7`.

1. One dense pass over the calibration set (as OWL, shared engine, all linears of a block in one group): the
   Wanda metric |W|·‖X_j‖₂ of every linear of block l, flattened and concatenated (float32, as the reference).
2. importance_l = post(deform(stick(metric_l))); a non-scalar result is averaged; NaN → 0, ±inf → −1 (reference).
3. v = minmax(importance); density d = minmax(1 − v)·2λ − mean + (1 − s); s_l = 1 − d_l; s_l ≤ 0 → 0.01.
   So in the released code a *higher* importance gets a *higher* sparsity (1 − v is the density before the map).
Default graph: the README's discovered function for LLaMA-1-7B, `W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)`
(log|S|, its variance, asin(atan(·))); λ = 0.08 (main.py default; the README command does not set it). The
trailing `(7)` is the engine's LAMBDA, which the pruning path never reads (documented, kept for the string).

Deviations / choices:
- Only operations defined on the reference's flattened 1-D metric are accepted (GRAM, CORREF, DETERMINANT, RANK,
  SLOGDET, DIAGONAL need a matrix: the reference asserts or fails on them): ConfigError names the valid ones.
- All blocks with equal importance (e.g. every asin(atan(var)) is NaN → 0): the reference divides by zero (NaN
  sparsities, a crash in the mask); here the allocation is uniform, with a warning.
- The mean of the block sparsities is checked (`check_layer_ratios`): it must be s within 1e-6 and every block in
  [0, 1) — s ± λ leaving [0, 1) (the clamp would move the mean) raises instead of pruning at another sparsity.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from repro.allocation._ratio_maps import check_layer_ratios
from repro.config import ConfigError, check_range
from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.prune.engine import BlockCallback, BlockContext
from repro.registry import register

log = logging.getLogger(__name__)

README_GRAPH = "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)"


def _log(x):          # LOG: values <= 0 become 1, then log(x + 1e-6)
    x = torch.where(x <= 0, torch.ones_like(x), x)
    return torch.log(x + 1e-6)


def _abslog(x):       # ABSLOG: zeros become 1, then log|x|
    return torch.log(torch.where(x == 0, torch.ones_like(x), x).abs())


def _normalize(x):    # (x − mean)/std (unbiased), NaN → 0
    c = (x - x.mean()) / x.std()
    return torch.nan_to_num(c, nan=0.0, posinf=float("inf"), neginf=float("-inf"))


def _entropy(x):      # 1-D input = probabilities: drop NaN/negative, renormalise, Shannon entropy (nats)
    p = x[~torch.isnan(x) & (x >= 0)]
    if p.numel() == 0:
        return torch.tensor(float("nan"))
    return torch.distributions.Categorical(probs=p / p.sum()).entropy()


STICK_OPS: Dict[str, Callable] = {
    "NO_OP": lambda x: x, "ABS": torch.abs, "LOG": _log, "ABSLOG": _abslog, "POW": lambda x: x * x,
    "EXP": torch.exp, "NORMALIZE": _normalize, "SIGMOID": torch.sigmoid, "TANH": torch.tanh,
    "MMS": lambda x: (x - x.min()) / (x.max() - x.min() + 1e-9),
}
DEFORM_OPS: Dict[str, Callable] = {
    "NO_OP": lambda x: x, "FROBENIUS_NORM": lambda x: torch.linalg.vector_norm(x),
    "L1_NORM": lambda x: x.abs().sum() / x.numel(), "GEOMETRIC_MEAN": lambda x: torch.prod(x).pow(1.0 / x.numel()),
    "MEAN": torch.mean, "VAR": torch.var, "STD": torch.std, "ENTROPY": _entropy,
}
MATRIX_ONLY_OPS = ("GRAM", "CORREF", "DIAGONAL", "DETERMINANT", "RANK", "SLOGDET")
POST_OPS: Dict[str, Callable] = {
    "NO_OP": lambda x: x, "SIN": torch.sin, "COS": torch.cos, "TAN": torch.tan, "ASIN": torch.asin,
    "ACOS": torch.acos, "ATAN": torch.atan, "EXP": torch.exp, "LOG": torch.log, "ABS": torch.abs,
    "SIGMOID": torch.sigmoid, "TANH": torch.tanh, "SOFTPLUS": F.softplus,
}
_GRAPH = re.compile(r"^W:\(([^()]*)\)-\(([^()]*)\)-\(([^()]*)\)(?:-\((\d+)\))?$")


@dataclass(frozen=True)
class Graph:
    stick: tuple
    deform: tuple
    post: tuple


def parse_graph(text: str, field: str = "allocation.graph") -> Graph:
    """`W:(STICK,...)-(DEFORM)-(POST,...)[-(LAMBDA)]` → the op names, each checked against its table."""
    m = _GRAPH.match(str(text).replace(" ", ""))
    expected = "a graph string W:(STICK,..)-(DEFORM,..)-(POST,..)[-(N)], e.g. " + README_GRAPH
    if m is None:
        raise ConfigError(field, text, expected)
    parts = []
    for ops_text, table, kind in zip(m.groups()[:3], (STICK_OPS, DEFORM_OPS, POST_OPS), ("stick", "deform", "post")):
        ops = tuple(o for o in ops_text.split(",") if o)
        for op in ops:
            if op not in table:
                hint = " (needs a matrix; DSA reduces a flattened 1-D metric)" if op in MATRIX_ONLY_OPS else ""
                raise ConfigError(field, text, f"{kind} ops from {', '.join(table)}; got {op!r}{hint}")
        parts.append(ops)
    return Graph(*parts)


@torch.no_grad()
def importance(metric: torch.Tensor, graph: Graph) -> float:
    """One block's importance: the graph's ops on the flattened metric, as `LayerEngine.compute_importance`."""
    x = metric.flatten()
    for name in graph.stick:
        x = STICK_OPS[name](x)
    for name in graph.deform:
        x = DEFORM_OPS[name](x)
    for name in graph.post:
        x = POST_OPS[name](x)
    value = float(x.item()) if x.numel() == 1 else float(x.mean().item())
    if math.isnan(value):
        return 0.0
    if math.isinf(value):
        return -1.0
    return value


def dsa_sparsities(importances: Sequence[float], sparsity: float, lam: float) -> List[float]:
    """Block sparsities from importances (lib/prune_all.py:2038-2062 and the per-layer clamp)."""
    v = torch.tensor(list(importances), dtype=torch.float64)
    span = float(v.max() - v.min())
    if span == 0.0:
        log.warning("DSA: every block has the same importance %.6g; the reference divides by zero here, "
                    "this allocation is uniform", float(v[0]))
        return [sparsity] * len(v)
    d = 1.0 - (v - v.min()) / span
    d = (d - d.min()) * (1.0 / float(d.max() - d.min()) * lam * 2)
    d = d - d.mean() + (1.0 - sparsity)
    return [0.01 if s <= 0 else s for s in (1.0 - d).tolist()]


@dataclass
class DSAConfig(MethodConfig):
    name: str = "dsa"
    graph: str = README_GRAPH            # the discovered allocation function (README, LLaMA-1-7B)
    lam: float = 0.08                    # λ: block sparsities span [s − λ, s + λ] (reference --Lamda)
    nsamples: Optional[int] = None       # calibration sequences for the metric pass; None = all (reference)

    def __post_init__(self):
        parse_graph(self.graph)
        check_range("allocation.lam", self.lam, lo=0.0, hi=1.0)
        if self.nsamples is not None:
            check_range("allocation.nsamples", self.nsamples, lo=1)


class _ImportancePass(BlockCallback):
    """Looks only: the importance of each block's concatenated dense Wanda metric."""
    stats = frozenset({"sq_norm"})

    def __init__(self, graph: Graph):
        self.graph = graph
        self.values: List[float] = []

    def on_group(self, ctx: BlockContext) -> None:
        metric = torch.cat([(lin.weight.detach().abs().float()
                             * torch.sqrt(ctx.stats[rel]["sq_norm"]).view(1, -1)).flatten()
                            for rel, lin in ctx.linears.items()])
        self.values.append(importance(metric, self.graph))


@register("allocation", "dsa", DSAConfig)
class DSA(Allocator):
    needs_calibration = True

    def allocate(self, ctx: AllocationContext) -> Dict[str, float]:
        callback = ctx.run_pass(_ImportancePass(parse_graph(self.cfg.graph)), self.cfg.nsamples)
        per_block = dsa_sparsities(callback.values, ctx.run.sparsity, self.cfg.lam)
        check_layer_ratios("allocation.lam", self.cfg.lam, per_block, ctx.run.sparsity,
                           f"block sparsities s ± λ inside [0, 1) (s = {ctx.run.sparsity})")
        ctx.report.update({"importance": callback.values, "block_sparsity": per_block, "graph": self.cfg.graph})
        log.info("DSA block sparsities: %s", ", ".join(f"{s:.3f}" for s in per_block))
        return ctx.adapter.block_targets(ctx.model, per_block)
