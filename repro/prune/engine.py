"""The one layer-by-layer calibration engine (the references' "sequential" pattern, DESIGN.md).

    capture the inputs of block 0 (and every keyword argument the block is called with)
    for each block:
        for each group of linears (all at once, or true-sequential q/k/v → o → gate/up → down):
            hook the group's linears, forward the calibration inputs, accumulate statistics
            callback.on_group(ctx)              # a method prunes (or only looks)
        outputs = re-forward the pruned block   # or the dense outputs (engine.propagate=dense)
        callback.after_block(ctx, outputs)      # e.g. restore weights (NeuronAL's search), read activations
        next block's inputs = outputs

References: locuslab/wanda lib/prune.py (prepare_calibration_input, prune_wanda), IST-DASLab/sparsegpt llama.py
/opt.py (llama_sequential, `--true-sequential` groups). Sample config: `engine=default` (conf/engine/default.yaml)
with `calib.batch_size=8`; `engine.offload=true engine.device=cuda` for models larger than the GPU.

Public API (used by every method; extend, keep backward compatible):
- `CalibrationEngine(model, adapter, engine_cfg, input_ids, batch_size).run(callback)`.
- `BlockCallback`: `stats` (kinds from `repro.prune.stats.STAT_KINDS`), `on_group(ctx)`, `after_block(ctx, outputs)`,
  `needs_inputs_after_block` (default True; False lets the engine free a block's inputs during its re-forward).
- `BlockContext`: `index`, `prefix`, `block`, `linears` (this group), `stats` (`LayerStats` per linear),
  `inputs` (`BlockInputs` entering the block), `group_index`, `full_name(rel)`. Linears that read the *same*
  input tensor (q/k/v; gate/up; OPT k/v/q) get the *same* `LayerStats` object (`ctx.stats[a] is ctx.stats[b]`):
  the statistic is accumulated once and derived quantities (`LayerStats.derived`) are shared. Scorers may
  define `prune_group(items, pattern)` (items = (full name, linear, stats, target)) to prune a group jointly;
  `repro.prune.pipeline.ApplyTargets` calls it when present, else `prune_layer` per linear.
- `capture_block_inputs(model, adapter, input_ids, batch_size, store_device)`, `forward_block(block, inputs)`.
- `calibration_pass(model, adapter, run, callback, input_ids, **engine_overrides)`: one pass with the run's engine
  settings and calibration batch size — how every method outside the engine starts a pass.
- `HookSet`: forward hooks owned by a `with` block, removed on leaving it even when the pass raises.
- Multi-objective runs (MOSP, Extension 1): `CalibrationEngine(..., domain_sizes=[n_1, …, n_m])` with the domains'
  windows concatenated in `input_ids`: ONE pass per block feeds every domain's windows, and each `LayerStats` keeps
  one statistics set per domain (`stats.parts[d]`; `stats[kind]` pools them).

Keyword arguments are captured once per batch size with a forward pre-hook and replayed verbatim, so rotary
`position_embeddings`, `cache_position`, causal masks and whatever a future transformers adds reach the block
(the references' Catcher kept only attention_mask/position_ids and broke on transformers >= 4.45).

Speed: the statistics pass stops a block's forward as soon as every hooked linear has seen its input (when the
dense outputs are not needed), and a statistic shared by several linears is accumulated once.

Offload (`engine.offload=true`): blocks and activations stay on CPU; during capture the non-block modules
(embeddings, rotary tables, final norm, head) visit `engine.device`, then each block is moved there while it is
calibrated and pruned and moved back; activations travel one batch at a time. The logic is exercised on CPU by
the tests (CPU→CPU); on an H100 (benchmarks/offload_check.py, 8 blocks of the LLaMA-2-7B shape) it gave
bit-identical weights to the all-on-GPU path for Wanda and SparseGPT at 2.5 / 4.0 GiB peak GPU memory.

Statistics are normalised per calibration *sequence* for every linear (the references count one "sample" per
hook call, which is a sequence because they forward one sequence at a time — also for OPT's fc1/fc2, whose
input is flattened to 2-D).

Deviations from the references: calibration sequences go through each block `batch_size` at a time (the
references loop one sequence at a time); statistics are accumulated as sums and divided by the number of
sequences at the end (the references keep a running mean) — equal up to float rounding; a block's forward for
statistics may stop before its last module (its output is then recomputed by the pruned re-forward, as in the
references, which also discard the statistics pass's outputs).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

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
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _move_outside_blocks(model: nn.Module, adapter: ArchAdapter, device) -> None:
    """Move every parameter and buffer that is not inside a decoder block (embeddings, rotary, norm, head)."""
    blocks = adapter.blocks(model)
    inside = {id(m) for m in blocks.modules()}
    for module in model.modules():
        if id(module) in inside:
            continue
        for name, p in module.named_parameters(recurse=False):
            p.data = p.data.to(device)
        for name, b in module.named_buffers(recurse=False):
            module._buffers[name] = b.to(device)


class HookSet:
    """Forward pre-hooks owned by a `with` block: every hook added is removed when the block is left, also when
    the pass inside raises (no hook outlives the pass that needed it). `remove()` ends them earlier."""

    def __init__(self):
        self._handles: list = []

    def add_pre(self, module: nn.Module, fn, **kwargs) -> None:
        self._handles.append(module.register_forward_pre_hook(fn, **kwargs))

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "HookSet":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@dataclass
class BlockInputs:
    """Activations entering a block, in batches, plus the keyword arguments the block expects per batch size."""
    batches: List[torch.Tensor]
    call_kwargs: Dict[int, dict] = field(default_factory=dict)
    domains: Optional[List[int]] = None          # calibration domain of each batch (multi-objective runs)

    @property
    def nsamples(self) -> int:
        return sum(b.shape[0] for b in self.batches)


@torch.no_grad()
def capture_block_inputs(model, adapter: ArchAdapter, input_ids: torch.Tensor, batch_size: int,
                         store_device: Optional[torch.device] = None) -> BlockInputs:
    """Run the model up to block 0 for each batch of `input_ids`; keep block 0's inputs and keyword arguments."""
    block0 = adapter.blocks(model)[0]
    seen: dict = {}

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_value", "past_key_values")}
        kwargs["use_cache"] = False
        seen["hidden"], seen["extra_args"], seen["kwargs"] = hidden, args[1:], kwargs
        raise _StopForward

    device = model.get_input_embeddings().weight.device
    out = BlockInputs([])
    with HookSet() as hooks:
        hooks.add_pre(block0, pre_hook, with_kwargs=True)
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
    return out


@torch.no_grad()
def forward_block(block: nn.Module, inputs: BlockInputs, desc: Optional[str] = None,
                  keep_outputs: bool = True, before_batch=None, consume_inputs: bool = False) -> List[torch.Tensor]:
    """Run `block` on every batch of `inputs` with its replayed kwargs; outputs land where the inputs live.

    `before_batch(x)` is called with each input batch; a hook raising `_StopForward` ends that batch early (then no
    output is kept for it — use `keep_outputs=False`). `consume_inputs` drops each input batch once its output
    exists, so inputs and outputs are never both held in full (the engine's memory peak).
    """
    device = _module_device(block)
    outs = []
    for j, x in enumerate(inputs.batches):
        kwargs = _to(inputs.call_kwargs[x.shape[0]], device)
        if before_batch is not None:
            before_batch(x)
        try:
            y = block(x.to(device, non_blocking=True), **kwargs)
        except _StopForward:
            continue
        if keep_outputs:
            y = y[0] if isinstance(y, (tuple, list)) else y
            outs.append(y.to(x.device))                  # blocking: a non_blocking D2H copy could be read early
        if consume_inputs:
            inputs.batches[j] = None
            del x
    return outs


@dataclass
class BlockContext:
    """What a method sees of one block while it is being pruned."""
    index: int
    prefix: str                                  # e.g. "model.layers.3"
    block: nn.Module
    linears: Dict[str, nn.Linear]                # the group being pruned now: relative name -> module
    stats: Dict[str, LayerStats]                 # statistics of those linears' inputs (shared when inputs are)
    inputs: Optional[BlockInputs]                # activations entering the block (None without calibration)
    group_index: int = 0

    def full_name(self, relative: str) -> str:
        return f"{self.prefix}.{relative}"


class BlockCallback:
    """Override what you need. `stats` names the statistics the engine accumulates (see repro.prune.stats).

    `needs_inputs_after_block = False` lets the engine free the block's inputs while it re-forwards the pruned
    block (then `ctx.inputs` is spent when `after_block` runs): the peak holds one copy of the activations plus
    one batch instead of two copies.
    """
    stats: frozenset = frozenset()
    needs_inputs_after_block: bool = True

    def on_group(self, ctx: BlockContext) -> None:
        pass

    def after_block(self, ctx: BlockContext, outputs: Optional[List[torch.Tensor]]) -> None:
        pass


def _check_finite(ctx: BlockContext) -> None:
    for name, lin in ctx.linears.items():
        if not torch.isfinite(lin.weight).all():
            raise FloatingPointError(f"NaN/Inf in the pruned weights of {ctx.full_name(name)} "
                                     f"(block {ctx.index}, layer {name})")


class _StatsCollector:
    """Forward pre-hooks that feed each hooked linear's input to its `LayerStats`.

    On the first batch, linears whose input is the very same tensor object share one `LayerStats`; later batches
    accumulate it once. With `stop_early`, the block's forward is interrupted once every hooked linear has seen
    its input, before the last one computes anything.
    """

    def __init__(self, linears: Dict[str, nn.Linear], kinds: frozenset, dtype: torch.dtype, stop_early: bool,
                 domains: Optional[List[int]] = None, ndomains: int = 0):
        self.linears, self.kinds, self.dtype, self.stop_early = linears, kinds, dtype, stop_early
        self.domains, self.ndomains, self._batch = domains, ndomains, -1
        self.stats: Dict[str, LayerStats] = {}
        self.owner: Dict[str, str] = {}
        self._first_batch_inputs: list = []
        self._pending: set = set()
        self._nseq = 0

    def start_batch(self, x: torch.Tensor) -> None:
        self._pending = set(self.linears)
        self._batch += 1
        self._nseq = x.shape[0]            # sequences in this batch, whatever shape a linear sees (OPT's fc1: 2-D)

    def _hook(self, name):
        def hook(module, args):
            x = args[0]
            if name not in self.owner:
                shared = next((other for t, other in self._first_batch_inputs if t is x), None)
                self.owner[name] = shared or name
                self.stats[name] = self.stats[shared] if shared else LayerStats(self.kinds, self.dtype,
                                                                                   self.ndomains)
                self._first_batch_inputs.append((x, name))
            if self.owner[name] == name:
                domain = self.domains[self._batch] if self.domains else None
                self.stats[name].add(x.reshape(-1, x.shape[-1]), nseq=self._nseq, domain=domain)
            self._pending.discard(name)
            if self.stop_early and not self._pending:
                raise _StopForward
        return hook

    def attach(self, hooks: HookSet) -> None:
        for n, lin in self.linears.items():
            hooks.add_pre(lin, self._hook(n))

    def finish(self) -> None:
        self._first_batch_inputs.clear()


class CalibrationEngine:
    def __init__(self, model, adapter: ArchAdapter, engine_cfg, input_ids: Optional[torch.Tensor],
                 batch_size: int = 8, progress: bool = True, domain_sizes: Optional[List[int]] = None):
        self.model, self.adapter, self.cfg = model, adapter, engine_cfg
        self.input_ids, self.batch_size, self.progress = input_ids, batch_size, progress
        # Multi-objective runs: `input_ids` holds each domain's windows in turn (domain_sizes[d] rows each);
        # batches never straddle two domains, and every linear gets one statistics set per domain.
        self.domain_sizes = list(domain_sizes) if domain_sizes else None
        self.ndomains = len(self.domain_sizes) if self.domain_sizes else 0
        self.stats_dtype = getattr(torch, engine_cfg.stats_dtype)
        self.offload = bool(getattr(engine_cfg, "offload", False))
        device = getattr(engine_cfg, "device", None)
        if self.offload:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        else:
            self.device = None           # blocks run where they are

    def groups(self) -> tuple:
        return self.adapter.sequential_groups if self.cfg.true_sequential else (self.adapter.linear_names,)

    def _capture(self) -> BlockInputs:
        if not self.domain_sizes:
            return self._capture_ids(self.input_ids)
        out, start = BlockInputs([], domains=[]), 0
        for d, size in enumerate(self.domain_sizes):
            part = self._capture_ids(self.input_ids[start:start + size])
            start += size
            out.batches += part.batches
            out.domains += [d] * len(part.batches)
            out.call_kwargs = {**part.call_kwargs, **out.call_kwargs}
        return out

    def _capture_ids(self, input_ids) -> BlockInputs:
        if not self.offload:
            return capture_block_inputs(self.model, self.adapter, input_ids, self.batch_size)
        home = _module_device(self.model.get_input_embeddings())
        _move_outside_blocks(self.model, self.adapter, self.device)
        try:
            return capture_block_inputs(self.model, self.adapter, input_ids, self.batch_size,
                                        store_device=torch.device("cpu"))
        finally:
            _move_outside_blocks(self.model, self.adapter, home)

    def run(self, callback: BlockCallback) -> None:
        path, blocks = self.adapter.blocks_with_path(self.model)
        kinds = frozenset(callback.stats)
        inputs = self._capture() if self.input_ids is not None else None
        log.info("calibration engine: %d blocks, %s, propagate=%s, groups=%d, offload=%s, statistics=%s",
                 len(blocks), "no calibration" if inputs is None else
                 f"{inputs.nsamples} sequences in batches of {self.batch_size}", self.cfg.propagate,
                 len(self.groups()), self.offload, sorted(kinds))
        it = tqdm(range(len(blocks)), desc="prune blocks", unit="block", disable=not self.progress)
        for i in it:
            block = blocks[i]
            home = _module_device(block)
            if self.offload:
                block.to(self.device)
            all_linears = self.adapter.linears(block)
            dense_outs, ctx = None, None
            for g, group in enumerate(self.groups()):
                linears = {n: all_linears[n] for n in group}
                want_dense = inputs is not None and g == 0 and self.cfg.propagate == "dense"
                stats = {n: LayerStats(kinds, self.stats_dtype, self.ndomains) for n in group}
                if inputs is not None and (kinds or want_dense):
                    stats, outs = self._forward_collecting(block, linears, kinds, inputs, keep_outputs=want_dense)
                    if want_dense:
                        dense_outs = outs
                for name, st in stats.items():
                    st.check_finite(f"{path}.{i}.{name} (block {i}, layer {name})")
                ctx = BlockContext(i, f"{path}.{i}", block, linears, stats, inputs, g)
                callback.on_group(ctx)
                _check_finite(ctx)
            outputs = None
            if inputs is not None:
                consume = not getattr(callback, "needs_inputs_after_block", True)
                outputs = dense_outs if self.cfg.propagate == "dense" else forward_block(
                    block, inputs, consume_inputs=consume)
            callback.after_block(ctx, outputs)
            if self.offload:
                block.to(home)
            if inputs is not None:
                inputs = BlockInputs(outputs, inputs.call_kwargs, inputs.domains)

    @torch.no_grad()
    def _forward_collecting(self, block, linears, kinds, inputs, keep_outputs: bool):
        collector = _StatsCollector(linears, kinds, self.stats_dtype, stop_early=not keep_outputs,
                                    domains=inputs.domains, ndomains=self.ndomains)
        with HookSet() as hooks:
            if kinds:
                collector.attach(hooks)
            try:
                outs = forward_block(block, inputs, keep_outputs=keep_outputs, before_batch=collector.start_batch)
            finally:
                collector.finish()
        stats = {n: collector.stats.get(n) or LayerStats(kinds, self.stats_dtype, self.ndomains) for n in linears}
        return stats, outs


def calibration_pass(model, adapter: ArchAdapter, run, callback: BlockCallback, input_ids: Optional[torch.Tensor],
                     *, progress: bool = True, domain_sizes: Optional[List[int]] = None, **engine_overrides):
    """One engine pass over `input_ids` (None: no calibration, `on_group` only) with the run's engine settings,
    `engine_overrides` (e.g. `propagate="pruned"`, `true_sequential=False`) replacing some, and the run's
    calibration batch size. Returns `callback`."""
    engine_cfg = dataclasses.replace(run.engine, **engine_overrides) if engine_overrides else run.engine
    CalibrationEngine(model, adapter, engine_cfg, input_ids, batch_size=run.calib.batch_size, progress=progress,
                      domain_sizes=domain_sizes).run(callback)
    return callback
