"""Compose the axes: allocation (how much per layer/row) → scorer inside the engine (which weights) → pattern.

`prune_model` is the only place that wires a scorer, an allocator and the engine together; methods never
call each other directly.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional

import torch

from repro.methods.base import AllocationContext, Target
from repro.prune.engine import BlockCallback, BlockContext, calibration_pass
from repro.prune.masks import sparsity_of
from repro.registry import build

log = logging.getLogger(__name__)


class ApplyTargets(BlockCallback):
    """The standard callback: prune each linear of the group with the scorer and its allocated target."""

    needs_inputs_after_block = False     # the engine may free each block's inputs during its re-forward

    def __init__(self, scorer, targets: Dict[str, Target], pattern):
        self.scorer, self.targets, self.pattern = scorer, targets, pattern
        self.stats = frozenset(scorer.stats)
        self.changed: set = set()        # linears whose kept weights the method may change (repro/store.py stores them)

    def on_group(self, ctx: BlockContext) -> None:
        items = [(ctx.full_name(rel), linear, ctx.stats[rel], self.targets[ctx.full_name(rel)])
                 for rel, linear in ctx.linears.items()]
        self._prune(items)
        if self.scorer.updates_weights:  # declared by the method (no copy of the dense weights to compare with);
            self.changed.update(full for full, _, _, _ in items)  # tests/test_store.py checks every scorer's claim

    def _prune(self, items) -> None:
        prune_group = getattr(self.scorer, "prune_group", None)    # SparseGPT: one pass per shared Hessian
        if prune_group is not None:
            prune_group(items, self.pattern)
            return
        for full, linear, stats, target in items:
            self.scorer.prune_layer(full, linear, stats, target, self.pattern)


def needs_calibration(run) -> bool:
    from repro.registry import method_class

    return bool(method_class("score", run.score.name).needs_calibration
                or method_class("allocation", run.allocation.name).needs_calibration
                or getattr(method_class("recovery", run.recovery.name), "needs_calibration", False))


def prune_model(model, adapter, run, calib_ids: Optional[torch.Tensor], changed: Optional[set] = None,
                run_dir: Optional[Path] = None) -> dict:
    """Prune `model` in place according to `run`; return the report that goes into the record. `changed`, when
    given, receives the names of the linears whose kept weights the method updated (SparseGPT); `run_dir` is the
    run's folder, where an allocator keeps its artefacts (None: derived from the run's identity when needed)."""
    scorer = build("score", run.score)
    report: dict = {"score": run.score.name, "allocation": run.allocation.name, "pattern": run.pattern.label}
    if not scorer.prunes:
        return report
    allocator = build("allocation", run.allocation)
    t0 = time.perf_counter()
    alloc_report: dict = {}
    targets = allocator.allocate(AllocationContext(model, adapter, run, scorer, calib_ids, alloc_report, run_dir))
    report["allocation_s"] = time.perf_counter() - t0
    report["allocation_report"] = alloc_report
    t0 = time.perf_counter()
    # SlimGPT: statistics of each group after the previous prune
    overrides = {"true_sequential": True} if getattr(scorer, "true_sequential", False) else {}
    make_callback = getattr(scorer, "make_callback", None)       # structured scorers (SlimGPT) bring their own
    callback = (make_callback(targets, run.pattern, adapter, model, run.sparsity) if make_callback is not None
                else ApplyTargets(scorer, targets, run.pattern))
    calibration_pass(model, adapter, run, callback, calib_ids if scorer.needs_calibration else None, **overrides)
    report.update(getattr(callback, "report", {}))
    if getattr(callback, "finish", None) is not None:
        report.update(callback.finish())
    if changed is not None:
        changed.update(callback.changed)
    report["prune_s"] = time.perf_counter() - t0
    return report


def measure_sparsity(model, adapter) -> dict:
    """Fraction of exact zeros per prunable linear and overall (decoder linears only, as the references)."""
    per_layer, zeros, total = {}, 0, 0
    for name, lin in adapter.all_linears(model).items():
        w = lin.weight
        z = int((w == 0).sum().item())
        per_layer[name] = z / w.numel()
        zeros += z
        total += w.numel()
    return {"overall": zeros / total if total else 0.0, "per_layer": per_layer}


__all__ = ["prune_model", "measure_sparsity", "needs_calibration", "ApplyTargets", "sparsity_of"]
