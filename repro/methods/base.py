"""Base classes of the two pruning axes: a `Scorer` ranks weights inside a layer (and may update them), an
`Allocator` decides how much sparsity each layer (or row) gets. Any scorer composes with any allocator.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn

from repro.prune.masks import build_mask
from repro.prune.stats import LayerStats

Target = Union[float, torch.Tensor]      # a layer's sparsity, or one sparsity per output row


@dataclass
class MethodConfig:
    name: str = "?"


class Scorer:
    """Prunes one linear given its input statistics and its sparsity target.

    Score-based methods override `score`; methods that also update weights (SparseGPT) override `prune_layer`.
    """
    needs_calibration = False
    prunes = True                        # False for the dense reference: no prune stage, no pruning fields
    stats: frozenset = frozenset()
    granularity = "row"                  # comparison group for a float target: "row" or "layer"
    updates_weights = False              # True when the kept weights change too (SparseGPT, ALPS): the pruned-model
                                         # store (repro/store.py) then keeps those linears' values, not only masks

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def check(cls, run) -> None:
        """The method's own preflight rules on the whole run (raise ConfigError); called before the model loads."""

    def score(self, name: str, weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def prune_layer(self, name: str, linear: nn.Linear, stats: LayerStats, target: Target, pattern) -> None:
        w = linear.weight.data
        mask = build_mask(self.score(name, w, stats), target, pattern, self.granularity)
        w[mask] = 0


class Allocator:
    """Returns the sparsity target of every prunable linear: `{full module name: float | per-row tensor}`."""
    needs_calibration = False

    def __init__(self, cfg):
        self.cfg = cfg

    def allocate(self, ctx: "AllocationContext") -> Dict[str, Target]:
        raise NotImplementedError


@dataclass
class AllocationContext:
    model: nn.Module
    adapter: object                      # repro.models.adapter.ArchAdapter
    run: object                          # repro.config.RunConfig
    scorer: Scorer                       # the base method (NeuronAL simulates pruning with it)
    calib_ids: Optional[torch.Tensor]    # calibration tokens [nsamples, seqlen] (None if not loaded)
    report: dict                         # allocators write what they searched/decided here (goes to the record)
    run_dir: Optional[Path] = None       # the run's folder (results/runs/<identity>); None: derived when asked

    @cached_property
    def tokenizer(self):
        """The run's tokenizer, loaded on first use (`repro.models.loading.load_model_tokenizer`)."""
        from repro.models.loading import load_model_tokenizer

        return load_model_tokenizer(self.run.model)

    def artifact_dir(self, name: str) -> Path:
        """`<run folder>/<name>`, where an allocator keeps its artefacts (created)."""
        if self.run_dir is None:
            from repro import record as rec
            from repro.stages import run_identity

            self.run_dir = rec.run_dir(self.run.paths.results, run_identity(self.run))
        out = Path(self.run_dir) / name
        out.mkdir(parents=True, exist_ok=True)
        return out

    def run_pass(self, callback, nsamples: Optional[int] = None, propagate: Optional[str] = "dense", *,
                 true_sequential: Optional[bool] = False, calibrated: bool = True, progress: bool = True):
        """One pass of the calibration engine over the first `nsamples` calibration sequences (all if None), with
        `callback` seeing each block (an allocator's statistics pass, or a search candidate); returns `callback`.
        `propagate`: the next block's inputs are the outputs of the "dense" or the "pruned" block;
        `true_sequential`: every linear of a block in one group (False) or the scorer's groups; None keeps the
        run's engine setting for either (a pass that prunes as the run will). `calibrated=False`: no calibration
        data (a scorer that needs none is only called per block)."""
        from repro.prune.engine import calibration_pass

        ids = None
        if calibrated:
            if self.calib_ids is None:
                raise RuntimeError(f"allocation={self.run.allocation.name} needs calibration data "
                                   "(calib.name=none was given)")
            ids = self.calib_ids if nsamples is None else self.calib_ids[:nsamples]
        overrides = {k: v for k, v in (("propagate", propagate), ("true_sequential", true_sequential))
                     if v is not None}
        return calibration_pass(self.model, self.adapter, self.run, callback, ids, progress=progress, **overrides)
