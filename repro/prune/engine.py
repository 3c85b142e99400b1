"""The one layer-by-layer calibration engine (the references' "sequential" pattern, DESIGN.md).

    capture the inputs of block 0 (and every keyword argument the block is called with)
    for each block:
        for each group of linears (all at once, or true-sequential q/k/v → o → gate/up → down):
            hook the group's linears, forward the calibration inputs, accumulate statistics
            callback.on_group(ctx)              # a method prunes (or only looks)
        outputs = re-forward the pruned block   # or the dense outputs (engine.propagate=dense)
        callback.after_block(ctx, outputs)      # e.g. restore weights (NeuronAL's search), read activations
        next block's inputs = outputs

Keyword arguments are captured once per batch size with a forward pre-hook and replayed verbatim, so rotary
`position_embeddings`, `cache_position`, causal masks and whatever a future transformers adds reach the block
(the references' Catcher kept only attention_mask/position_ids and broke on transformers >= 4.45).

Deviations from the references: calibration sequences go through each block `batch_size` at a time (the
references loop one sequence at a time); statistics are accumulated as sums and divided by the number of
sequences at the end (the references keep a running mean) — equal up to float rounding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from repro.models.adapter import ArchAdapter
from repro.prune.stats import LayerStats

log = logging.getLogger(__name__)


class _StopForward(Exception):
    pass


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@dataclass
class BlockInputs:
    """Activations entering a block, in batches, plus the keyword arguments the block expects per batch size."""
    batches: List[torch.Tensor]
    call_kwargs: Dict[int, dict] = field(default_factory=dict)

    @property
    def nsamples(self) -> int:
        return sum(b.shape[0] for b in self.batches)


@torch.no_grad()
def capture_block_inputs(model, adapter: ArchAdapter, input_ids: torch.Tensor, batch_size: int,
                         store_device: Optional[torch.device] = None) -> BlockInputs:
    block0 = adapter.blocks(model)[0]
    seen: dict = {}

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_value", "past_key_values")}
        kwargs["use_cache"] = False
        seen["hidden"], seen["extra_args"], seen["kwargs"] = hidden, args[1:], kwargs
        raise _StopForward

    handle = block0.register_forward_pre_hook(pre_hook, with_kwargs=True)
    device = model.get_input_embeddings().weight.device
    out = BlockInputs([])
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            batch = input_ids[start:start + batch_size].to(device)
            try:
                model(batch, use_cache=False)
            except _StopForward:
                pass
            out.batches.append(seen["hidden"].to(store_device) if store_device else seen["hidden"])
            if batch.shape[0] not in out.call_kwargs:
                if seen["extra_args"]:
                    raise RuntimeError("decoder block called with extra positional arguments; replaying them is "
                                       "not supported: extend capture_block_inputs")
                out.call_kwargs[batch.shape[0]] = seen["kwargs"]
    finally:
        handle.remove()
    return out


@torch.no_grad()
def forward_block(block: nn.Module, inputs: BlockInputs, desc: Optional[str] = None) -> List[torch.Tensor]:
    device = _module_device(block)
    outs = []
    for x in inputs.batches:
        kwargs = _to(inputs.call_kwargs[x.shape[0]], device)
        y = block(x.to(device), **kwargs)
        y = y[0] if isinstance(y, (tuple, list)) else y
        outs.append(y.to(x.device))
    return outs


@dataclass
class BlockContext:
    """What a method sees of one block while it is being pruned."""
    index: int
    prefix: str                                  # e.g. "model.layers.3"
    block: nn.Module
    linears: Dict[str, nn.Linear]                # the group being pruned now: relative name -> module
    stats: Dict[str, LayerStats]                 # statistics of those linears' inputs
    inputs: Optional[BlockInputs]                # activations entering the block (None without calibration)
    group_index: int = 0

    def full_name(self, relative: str) -> str:
        return f"{self.prefix}.{relative}"


class BlockCallback:
    """Override what you need. `stats` names the statistics the engine accumulates (see repro.prune.stats)."""
    stats: frozenset = frozenset()

    def on_group(self, ctx: BlockContext) -> None:
        pass

    def after_block(self, ctx: BlockContext, outputs: Optional[List[torch.Tensor]]) -> None:
        pass


def _check_finite(ctx: BlockContext) -> None:
    for name, lin in ctx.linears.items():
        if not torch.isfinite(lin.weight).all():
            raise FloatingPointError(f"NaN/Inf in the pruned weights of {ctx.full_name(name)} "
                                     f"(block {ctx.index}, layer {name})")


class CalibrationEngine:
    def __init__(self, model, adapter: ArchAdapter, engine_cfg, input_ids: Optional[torch.Tensor],
                 batch_size: int = 8, progress: bool = True):
        self.model, self.adapter, self.cfg = model, adapter, engine_cfg
        self.input_ids, self.batch_size, self.progress = input_ids, batch_size, progress
        self.stats_dtype = getattr(torch, engine_cfg.stats_dtype)

    def groups(self) -> tuple:
        return self.adapter.sequential_groups if self.cfg.true_sequential else (self.adapter.linear_names,)

    def run(self, callback: BlockCallback) -> None:
        blocks = self.adapter.blocks(self.model)
        inputs = None
        if self.input_ids is not None:
            inputs = capture_block_inputs(self.model, self.adapter, self.input_ids, self.batch_size)
        it = tqdm(range(len(blocks)), desc="prune blocks", unit="block", disable=not self.progress)
        for i in it:
            block = blocks[i]
            all_linears = self.adapter.linears(block)
            dense_outs = None
            ctx = None
            for g, group in enumerate(self.groups()):
                linears = {n: all_linears[n] for n in group}
                stats = {n: LayerStats(callback.stats, self.stats_dtype) for n in group}
                if inputs is not None:
                    outs = self._forward_collecting(block, linears, stats, inputs, callback.stats)
                    if g == 0:
                        dense_outs = outs
                for name, st in stats.items():
                    st.check_finite(f"{self.adapter.block_prefix(i)}.{name}")
                ctx = BlockContext(i, self.adapter.block_prefix(i), block, linears, stats, inputs, g)
                callback.on_group(ctx)
                _check_finite(ctx)
            outputs = None
            if inputs is not None:
                outputs = dense_outs if self.cfg.propagate == "dense" else forward_block(block, inputs)
            callback.after_block(ctx, outputs)
            if inputs is not None:
                inputs = BlockInputs(outputs, inputs.call_kwargs)

    @torch.no_grad()
    def _forward_collecting(self, block, linears, stats, inputs, kinds) -> List[torch.Tensor]:
        handles = []
        if kinds:
            for name, lin in linears.items():
                def hook(mod, args, out, _st=stats[name]):
                    x = args[0]
                    _st.add(x.reshape(-1, x.shape[-1]), nseq=x.shape[0] if x.dim() == 3 else 1)
                handles.append(lin.register_forward_hook(hook))
        try:
            return forward_block(block, inputs)
        finally:
            for h in handles:
                h.remove()
