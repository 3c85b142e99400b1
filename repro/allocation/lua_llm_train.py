"""Lua-LLM training maths and glue: rank fractions, the soft row mask, the STE kept ratio, the log-ratio regulariser,
the threshold training loop, and the exact-budget hardening. Used by `repro/allocation/lua_llm.py` (read that
docstring first: paper, reference files, deviations).

Notation (one linear, C = in_features, one threshold t_r per output row r):
- rank fraction  s_rj = (C − rank_rj) / C ∈ (0, 1], rank_rj = position of weight j in row r's *stable descending*
  order of the dense Wanda metric (0 = most important). Without ties this is the reference's empirical CDF
  `#{k : S_rk <= S_rj} / C` (wanda/lib/prune.py:prune_score); with ties the stable order breaks them the way the
  shared mask builder `keep_highest_per_row` does. Only the integer ranks are stored (int16/int32, not fp32 scores).
- soft mask  M_rj = σ(C · (s_rj − t_r)) = σ((C − rank_rj) − C·t_r)        (paper Eqn 7; models/masked_layers.py)
- hard mask  1[s_rj > t_r]: row r keeps C − clamp(floor(C·t_r), 0, C) weights   (paper Eqn 6; `round(σ)`)
- kept ratio R = Σ_l g_l·Σ_r hard_r / Σ_l g_l·numel_l with the straight-through estimator: forward = hard count,
  backward = d/dt of the soft count (lua_llama.py:train_hn + MaskedLinear.get_parameter_count; g_l = heads/kv_heads
  for GQA k/v projections as MaskedLinearGQA, else 1).
- loss = CE(masked model) + λ · |log(R/ρ)|, ρ = 1 − sparsity (the reference's branches: log(R/ρ) if R > ρ else
  log(ρ/R)).

The STE count needs no [rows, C] tensor: the ranks of a row are a permutation of 0..C−1, so
Σ_j σ(C − rank_j − C·t) = Σ_{k=1..C} σ(k − C·t); its t-gradient is summed over the ±`_WINDOW` ranks around C·t
(terms further away are < e^-40 of the peak). The regulariser therefore never materialises masks; the masked
weights exist only inside each linear's forward (a `torch.nn.utils.parametrize` parametrization), which gradient
checkpointing recomputes per block in the backward pass.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

_WINDOW = 48


# ----------------------------------------------------------------------------------------------- pure maths
def descending_ranks(score: torch.Tensor) -> torch.Tensor:
    """Rank of every entry in its row's stable descending order (0 = highest), int16 when it fits, else int32."""
    rows, cols = score.shape
    order = torch.sort(score, dim=-1, descending=True, stable=True)[1]
    dtype = torch.int16 if cols <= torch.iinfo(torch.int16).max else torch.int32
    rank = torch.empty((rows, cols), dtype=dtype, device=score.device)
    rank.scatter_(1, order, torch.arange(cols, device=score.device, dtype=dtype).expand(rows, cols))
    return rank


def rank_fractions(rank: torch.Tensor) -> torch.Tensor:
    """s = (C − rank) / C ∈ (0, 1] (fp32)."""
    cols = rank.shape[1]
    return (cols - rank.to(torch.float32)) / cols


def soft_mask(rank: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """σ(C·(s − t)) computed as σ((C − rank) − C·t): fp32 [rows, C]."""
    cols = rank.shape[1]
    return torch.sigmoid((cols - rank.to(torch.float32)) - cols * thresholds.view(-1, 1).float())


def hard_keep(rank: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Eqn 6, 1[s > t] = round(σ(C(s − t))) as a boolean keep-mask."""
    cols = rank.shape[1]
    return (cols - rank.to(torch.float32)) > cols * thresholds.view(-1, 1).float()


def row_zero_counts(thresholds: torch.Tensor, cols: int) -> torch.Tensor:
    """Weights the hard mask removes per row: clamp(floor(C·t), 0, C) (int64; computed in float64)."""
    return torch.floor(thresholds.detach().to(torch.float64) * cols).clamp(0, cols).to(torch.long)


class _SteKeptCount(torch.autograd.Function):
    """Forward: Σ_r (C − zeros_r) (the hard kept count). Backward: the soft count's gradient −C·Σ_k σ'(k − C·t_r)."""

    @staticmethod
    def forward(ctx, thresholds: torch.Tensor, cols: int):
        ctx.save_for_backward(thresholds)
        ctx.cols = cols
        zeros = row_zero_counts(thresholds, cols)
        return (cols - zeros).sum().to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out):
        (t,) = ctx.saved_tensors
        cols = ctx.cols
        x = cols * t.detach().to(torch.float64)
        base = torch.floor(x).view(-1, 1)
        k = base + torch.arange(-_WINDOW, _WINDOW + 1, device=t.device, dtype=torch.float64).view(1, -1)
        valid = (k >= 1) & (k <= cols)
        sig = torch.sigmoid(k - x.view(-1, 1))
        dsum = (sig * (1 - sig) * valid).sum(dim=1)          # Σ_k σ'(k − C t)
        return (grad_out * (-cols) * dsum).to(t.dtype), None


def kept_count_ste(thresholds: torch.Tensor, cols: int) -> torch.Tensor:
    return _SteKeptCount.apply(thresholds, cols)


def kept_count_ste_dense(rank: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """The reference's form, Σ hard_sample(σ(·)) over the full mask (tests check `kept_count_ste` against it)."""
    m = soft_mask(rank, thresholds)
    return (torch.round(m) - m).detach().sum() + m.sum()


def log_ratio_penalty(ratio: torch.Tensor, density: float) -> torch.Tensor:
    """|log(R/ρ)| written as the reference's two branches (lua_llama.py:train_hn)."""
    if float(ratio.detach()) > density:
        return torch.log(torch.clamp(ratio, min=density) / density)
    return torch.log(density / torch.clamp(ratio, max=density))


def exact_budget_zero_counts(thresholds: List[torch.Tensor], cols: List[int], target_zeros: int) -> List[torch.Tensor]:
    """Per-row zero counts with Σ = `target_zeros` exactly: the hard counts of t + δ for one global shift δ.

    δ is bisected in float64 until the count function f(δ) = Σ clamp(floor(C·(t + δ)), 0, C) jumps across the
    target between two adjacent floats; the rows stepping inside that jump (a tie of several rows) get their extra
    zero in layer order, then row order, until the target is met. With no adjustment needed, δ = 0 is returned as is.
    """
    total = sum(t.numel() * c for t, c in zip(thresholds, cols))
    if not 0 <= target_zeros <= total:
        raise ValueError(f"target zeros {target_zeros} outside [0, {total}]")
    t64 = [t.detach().to(torch.float64).cpu() for t in thresholds]

    def counts(delta: float) -> List[torch.Tensor]:
        return [torch.floor((t + delta) * c).clamp(0, c).to(torch.long) for t, c in zip(t64, cols)]

    def f(delta: float) -> int:
        return int(sum(int(z.sum()) for z in counts(delta)))

    if f(0.0) == target_zeros:
        return counts(0.0)
    lo, hi = -1.0 - 1.0 / min(cols), 1.0 + 1.0 / min(cols)     # f(lo) = 0, f(hi) = total
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if f(mid) <= target_zeros:
            lo = mid
        else:
            hi = mid
    z_lo, z_hi = counts(lo), counts(hi)
    missing = target_zeros - int(sum(int(z.sum()) for z in z_lo))
    out = []
    for a, b in zip(z_lo, z_hi):
        step = (b - a).clamp(max=1)
        if missing > 0:
            take = torch.cumsum(step, 0) <= missing
            add = step * take
            missing -= int(add.sum())
            a = a + add
        out.append(a)
    assert missing == 0, "bisection left rows that cannot step (should not happen)"
    return out


def row_sparsity_for_keep_builder(zeros: torch.Tensor, cols: int) -> torch.Tensor:
    """float64 per-row sparsity s with floor((1 − s)·C) == C − zeros exactly (the shared `keep_highest_per_row`).

    z/C is nudged down one float at a time where float64 rounding would make the builder keep one weight fewer.
    """
    s = zeros.to(torch.float64) / cols
    want = cols - zeros.to(torch.long)
    for _ in range(8):
        got = torch.floor((1 - s) * cols).to(torch.long)
        bad = got < want
        if not bad.any():
            break
        s = torch.where(bad, torch.nextafter(s, torch.full_like(s, -1.0)), s)
    got = torch.floor((1 - s) * cols).to(torch.long)
    if not torch.equal(got, want):
        raise AssertionError("could not express the per-row keep counts as sparsities")
    return s


def memory_plan(n_params: int, n_prunable: int, param_bytes: int, rank_bytes: int, rows: int,
                largest_linear: int, seqlen: int, batch: int, hidden: int, vocab: int, nblocks: int,
                checkpointing: bool) -> Dict[str, float]:
    """Bytes of the training step (an estimate; GB in the result). Without checkpointing every masked weight and
    fp32 mask stays alive for the backward pass; with it only one block's worth (recomputed)."""
    gb = 1024 ** 3
    weights = n_params * param_bytes
    ranks = n_prunable * rank_bytes
    thresholds = rows * 4 * 4                              # value, grad, AdamW's two moments
    masked = (largest_linear * 7 if checkpointing else n_prunable) * (4 + 4 + param_bytes)
    acts = batch * seqlen * hidden * 4 * (nblocks if checkpointing else nblocks * 16)
    logits = batch * seqlen * vocab * 4 * 3
    plan = {"weights": weights, "ranks": ranks, "thresholds": thresholds, "masks_and_masked_weights": masked,
            "activations": acts, "logits": logits}
    plan = {k: v / gb for k, v in plan.items()}
    plan["total"] = sum(plan.values())
    return plan


# ----------------------------------------------------------------------------------------------- glue
class RowThresholdMask(nn.Module):
    """Parametrization of a frozen linear's weight: W ⊙ σ(C·(s − t)), or W ⊙ hard-STE(σ) (`mode=ste`)."""

    def __init__(self, rank: torch.Tensor, thresholds: nn.Parameter, mode: str = "soft"):
        super().__init__()
        self.register_buffer("rank", rank, persistent=False)
        self.thresholds = thresholds
        self.mode = mode

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        m = soft_mask(self.rank, self.thresholds)
        if self.mode == "ste":
            m = (torch.round(m) - m).detach() + m
        return weight * m.to(weight.dtype)


@dataclass
class MaskedLayer:
    name: str
    linear: nn.Linear
    thresholds: nn.Parameter
    rank: torch.Tensor
    count_weight: float = 1.0          # GQA multiplier in the kept ratio (MaskedLinearGQA)

    @property
    def cols(self) -> int:
        return self.rank.shape[1]


@contextmanager
def soft_masked(layers: List[MaskedLayer], mode: str, model: Optional[nn.Module] = None):
    """Attach the row-threshold parametrization to every layer; every weight of `model` (or of the layers) frozen
    (`requires_grad=False`, as lua_llama.py:train_hn); originals and flags restored on exit."""
    owned = list(model.parameters()) if model is not None else [
        p for l in layers for p in l.linear.parameters(recurse=False)]
    frozen = [(p, p.requires_grad) for p in owned]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        for l in layers:
            parametrize.register_parametrization(l.linear, "weight", RowThresholdMask(l.rank, l.thresholds, mode),
                                                 unsafe=True)
        yield
    finally:
        for l in layers:
            if parametrize.is_parametrized(l.linear, "weight"):
                parametrize.remove_parametrizations(l.linear, "weight", leave_parametrized=False)
        for p, req in frozen:
            p.requires_grad_(req)


@contextmanager
def checkpointed_blocks(blocks: nn.ModuleList, enabled: bool):
    """Activation checkpointing per decoder block (torch.utils.checkpoint, non-reentrant) without `model.train()`
    (HF's switch needs train mode, which would turn on OPT's dropout; the reference trains in eval mode)."""
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    originals = []
    for block in blocks:
        fwd = block.forward
        originals.append(block)

        def wrapped(*args, __fwd=fwd, **kwargs):
            return checkpoint(__fwd, *args, use_reentrant=False, **kwargs)
        block.forward = wrapped
    try:
        yield
    finally:
        for block in originals:
            del block.forward


@dataclass
class TrainResult:
    iterations_done: int
    history: List[dict] = field(default_factory=list)
    stopped: Optional[dict] = None     # {"reason": "NaN loss", "iteration": i}
    seconds_per_iteration: float = float("nan")


def kept_ratio(layers: List[MaskedLayer]) -> torch.Tensor:
    num = sum(l.count_weight * kept_count_ste(l.thresholds, l.cols) for l in layers)
    den = sum(l.count_weight * l.rank.numel() for l in layers)
    return num / den


def train_thresholds(model: nn.Module, layers: List[MaskedLayer], segments: Callable[[int], torch.Tensor],
                     density: float, *, iterations: int, lr: float, weight_decay: float, lam: float,
                     mode: str = "soft", autocast_dtype: Optional[torch.dtype] = None, checkpoint_blocks=None,
                     grad_sync: Optional[Callable[[List[torch.Tensor]], None]] = None, log_every: int = 10,
                     progress: bool = True) -> TrainResult:
    """AdamW on the thresholds only (lua_llama.py:train_hn). `segments(i)` returns the token batch of step i.

    A non-finite loss stops training: the thresholds of the last finite step are restored and the iteration is
    reported in `TrainResult.stopped`.
    """
    params = [l.thresholds for l in layers]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    device = params[0].device
    result = TrainResult(0)
    t_total = 0.0
    bar = tqdm(range(iterations), desc="lua-llm thresholds", unit="it", disable=not progress)
    with soft_masked(layers, mode, model), checkpointed_blocks(checkpoint_blocks or [], checkpoint_blocks is not None):
        for it in bar:
            t0 = time.perf_counter()
            last_good = [p.detach().clone() for p in params]
            ids = segments(it).to(device)
            amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                   else nullcontext())
            with amp:
                logits = model(ids, use_cache=False).logits
                ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
            ratio = kept_ratio(layers)
            reg = lam * log_ratio_penalty(ratio, density)
            loss = ce + reg
            if not torch.isfinite(loss):
                with torch.no_grad():
                    for p, good in zip(params, last_good):
                        p.copy_(good)
                result.stopped = {"reason": "non-finite loss", "iteration": it, "ce": float(ce.detach()),
                                  "reg": float(reg.detach())}
                log.error("Lua-LLM: loss is %s at iteration %d; training stopped, the thresholds of iteration %d "
                          "are kept", float(loss.detach()), it, it - 1)
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_sync is not None:
                grad_sync(params)
            opt.step()
            dt = time.perf_counter() - t0
            t_total += dt
            result.iterations_done = it + 1
            entry = {"iteration": it, "ce": float(ce.detach()), "reg": float(reg.detach()),
                     "kept_ratio": float(ratio.detach()), "s": dt}
            result.history.append(entry)
            bar.set_postfix(ce=f"{entry['ce']:.3f}", R=f"{entry['kept_ratio']:.4f}")
            if it % log_every == 0 or it == iterations - 1:
                log.info("Lua-LLM iter %d/%d: ce %.4f reg %.4f kept ratio %.4f (target %.4f) %.2f s/it", it,
                         iterations, entry["ce"], entry["reg"], entry["kept_ratio"], density, dt)
    if result.iterations_done:
        result.seconds_per_iteration = t_total / result.iterations_done
    return result


def all_reduce_mean(params: List[torch.Tensor]) -> None:
    """Data parallel under torchrun: average the threshold gradients over ranks (one flat all_reduce)."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def gqa_count_weight(layer_name: str, linear: nn.Linear, siblings: Dict[str, nn.Linear]) -> float:
    """heads / kv_heads for GQA k/v projections (MaskedLinearGQA), else 1."""
    leaf = layer_name.rsplit(".", 1)[-1]
    q = siblings.get(layer_name.rsplit(".", 1)[0] + ".q_proj") if leaf in ("k_proj", "v_proj") else None
    if q is None or q.out_features == linear.out_features:
        return 1.0
    return q.out_features / linear.out_features


__all__ = ["descending_ranks", "rank_fractions", "soft_mask", "hard_keep", "row_zero_counts", "kept_count_ste",
           "kept_count_ste_dense", "log_ratio_penalty", "exact_budget_zero_counts", "row_sparsity_for_keep_builder",
           "MaskedLayer", "soft_masked", "train_thresholds", "all_reduce_mean", "gqa_count_weight", "memory_plan"]
