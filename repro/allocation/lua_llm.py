"""Lua-LLM (Lu, Sun, Lin, Zhou, Sun; NeurIPS 2025): learned unstructured-sparsity allocation, one threshold per row.

    python -m repro.run env=offline model=smollm2-135m allocation=lua_llm score=wanda sparsity=0.7 \
        allocation.iterations=20
    repro run -m experiment=lua_llm/table1                  # the paper's grid (conf/experiment/lua_llm/)

References (read, not copied): minggeOvO/Lua-LLM @513a230 — wanda/lib/prune.py:451-560 (`prune_score`: dense Wanda
metric |W|·‖X_j‖₂ on 128 C4 windows, row-wise empirical CDF), models/masked_layers.py (`MaskedLinear.forward`:
σ(C_in·(s − t)), `hard_sample` STE count, `MaskedLinearGQA`), lua_llama.py:180-290 (`train_hn`: AdamW on the
thresholds only, CE + λ·log-ratio penalty), README (λ = 16, 500 steps); research note shared/research/lua_mosp.md §1.

Pipeline (one `allocate` call; then the pipeline prunes with `score=wanda` at the returned per-row targets):
1. Validation (ConfigError, before any pass): target sparsity in the trainable range (every row can keep and drop
   a weight at init), unstructured pattern, the memory plan (`memory_budget_gb`, default: the CUDA device's memory).
2. Score pass: the shared `CalibrationEngine` with `engine.propagate=dense` over the calibration windows collects
   `sq_norm`; each linear's Wanda metric becomes per-row stable descending ranks
   (rank fractions s = (C − rank)/C, the ECDF without ties) — see repro/allocation/lua_llm_train.py.
3. Training (`lua_llm_train.train_thresholds`): thresholds t (one per output row of q,k,v,o,gate,up,down of every
   block; OPT: q,k,v,out,fc1,fc2) initialised to the target sparsity (`init=target`, paper Alg. 1) or 0.5
   (`init=code`, lua_llama.py `mask_init_value`); weights frozen; soft mask σ(C·(s − t)) parametrizes each
   weight; loss CE + λ|log(R/ρ)| with the STE kept ratio R; AdamW(lr 5e-3, wd 0.05), `iterations` = 500 steps of
   `batch_size` windows; bf16 autocast on CUDA; activation checkpointing per block.
4. Hardening (Eqn 6): row r drops floor(C·t_r) weights; a global shift of all thresholds (bisected; ties broken in
   layer, then row order) makes the total number of zeros exactly the budget (`budget=uniform_rows`:
   Σ rows·floor(s·C), what uniform row-wise Wanda removes; `budget=global`: floor(s·N)). Returned as the learned
   hard masks themselves (a fixed-mask target, repro/prune/masks.py), so the pipeline applies exactly the masks
   that were learned on the dense Wanda ranks, whatever `engine.propagate` is (as the reference, which multiplies
   the dense weights by its learned masks); with `score=sparsegpt` the OBS update then runs around those masks.
5. Artefacts in the run directory (`<paths.results>/runs/<identity>/lua_llm/`): `thresholds.pt` (learned and
   final thresholds, zeros per row), `masks.pt` (bit-packed keep masks, `save_masks`), `layer_sparsity.png`
   (per-block sparsity of each projection), `history.json` (loss, kept ratio, seconds per iteration).

Data: the calibration windows (`calib.nsamples` = 128; or the first `score_nsamples`) give the dense Wanda
statistics. Training windows: with `train_windows=N` (the experiment files: 1000 =
500 steps x 2 GPUs) N further windows are drawn from the same source and seed right after the `calib.nsamples`
calibration windows (our `load_calibration` sampler, C4 by default), so baselines keep their 128 windows; with
`train_windows=null` training cycles over the calibration windows, starting after the score windows. Step i of
rank r reads windows (i·world + r)·batch_size + b (mod the set). Effective batch: the paper trains on 2 GPUs × 1
window (FSDP, gradients averaged); `batch_size=2` (default) on one process reads the same windows 2i, 2i+1 at step i
and its CE is the mean over both equal-length windows, i.e. the same gradient. Under torchrun with N processes set
`batch_size=2/N`; the record's `allocation_report.effective_batch` (= batch_size × world) is checked against the
paper's 2 by the collector (experiments/lua_llm/tables.yaml `lua_effective_batch`).
Training text (`train_data`): `calib` (default) = the calibration source — C4 in every experiment file, as the
paper states; `wikitext103` = WikiText-103 train as the released code streams it (data/data_utils.py:
`wikitext-103-raw-v1`, unshuffled, rows tokenised and grouped 50 at a time; `stream_windows`), the first
`train_windows` windows (null: iterations x batch_size); `train_data_path` for a local copy.

Scale: a 7B model on one 80 GB GPU — bf16 weights (13.5 GB) + int16 ranks (13 GB) + per-block masks recomputed
under checkpointing; the plan is checked before training (`memory_plan`). Multi-GPU data parallel: launch the same
command under torchrun (`torchrun --nproc_per_node=2 -m repro.run ...`); each rank computes the same scores and
trains on its own windows, and the threshold gradients are averaged with one all_reduce per step (DDP semantics;
the thresholds are the only trainable tensors). UNTESTED: there is no GPU on the development machine; only the
CPU single-process path runs in tests.

Deviations (deliberate):
- Ranks come from a stable descending sort; the reference's O(C²) ECDF gives tied weights the same s. Scores are
  exact (fp32 metric, integer ranks) where the reference rounds s to fp16/bf16 (many ties near 1).
- The exact-budget shift (step 4) is an addition (the reference hardens with round(σ) and no budget repair).
- The STE count's backward is summed over ±48 ranks around C·t (exact up to e^-40), not over the full mask.
- CE over the window's own next tokens (T − 1 predictions per T-token window); the reference packs T + 1 tokens and
  ignores BOS-id labels (padding), which C4 windows do not contain.
- Training windows: C4 (paper) from our calibration sampler; the released code streams WikiText-103.
- The released code never calls `model.train()`, so its `MaskedLinear` forward runs the eval branch (hard mask
  with STE); the paper's Eqn 7 is the soft mask. `forward_mask=soft` (default) follows the paper, `ste` the code.
- The model stays in eval mode during training (no dropout), as in the reference.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from repro.allocation import lua_llm_train as T
from repro.config import ConfigError, check_choice, check_range
from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.methods.wanda import wanda_score
from repro.prune.engine import BlockCallback, BlockContext
from repro.registry import register

log = logging.getLogger(__name__)

INITS = ("target", "code")
TRAIN_DATA = ("calib", "wikitext103")
BUDGETS = ("uniform_rows", "global")
PRECISIONS = ("bf16", "fp32")


@dataclass
class LuaLLMConfig(MethodConfig):
    name: str = "lua_llm"
    iterations: int = 500                # optimisation steps (lua_llama.py --total_n_step)
    lr: float = 5e-3                     # AdamW (paper; run_llama_7b.sh --hn_lr)
    weight_decay: float = 0.05
    lam: float = 16.0                    # λ_reg (lua_llama.py --lam)
    init: str = "target"                 # target: t = sparsity (paper Alg. 1) | code: t = 0.5 (mask_init_value)
    batch_size: int = 2                  # windows per step and per process (2 = the paper's 2 GPUs x 1 on one
                                         # process; under torchrun with N processes set 2/N)
    train_seqlen: Optional[int] = None   # crop training windows to this many tokens (None = calibration seqlen)
    score_nsamples: Optional[int] = None # calibration windows for the dense Wanda statistics (None = all, as the
                                         # pipeline's Wanda pass: only then is the applied mask the learned one)
    train_windows: Optional[int] = 1000  # None: train on the calibration windows (cycled); N: draw N more windows
                                         # from the calibration source after the calib.nsamples ones
    train_data: str = "calib"            # calib: the calibration source (C4 in the experiments: the paper) |
                                         # wikitext103: WikiText-103 train, consecutive windows (released code)
    train_data_path: Optional[str] = None  # local WikiText-103 train file (.txt / .jsonl / .parquet) for wikitext103
    forward_mask: str = "soft"           # soft: σ(C(s−t)) (paper Eqn 7) | ste: round(σ) with STE (released code)
    gqa_weighting: bool = True           # count GQA k/v as heads/kv_heads times larger in R (MaskedLinearGQA)
    budget: str = "uniform_rows"         # uniform_rows: Σ rows·floor(s·C) zeros | global: floor(s·N) zeros
    precision: str = "bf16"              # autocast dtype on CUDA (CPU always runs in the model's dtype)
    gradient_checkpointing: bool = True  # recompute each block (and its masks) in the backward pass
    memory_budget_gb: Optional[float] = None   # None = total memory of the CUDA device (no check on CPU)
    save_masks: bool = True
    plot: bool = True
    log_every: int = 10

    def __post_init__(self):
        check_range("allocation.iterations", self.iterations, lo=1)
        check_range("allocation.lr", self.lr, lo=0.0, lo_open=True)
        check_range("allocation.weight_decay", self.weight_decay, lo=0.0)
        check_range("allocation.lam", self.lam, lo=0.0)
        check_choice("allocation.init", self.init, INITS)
        check_range("allocation.batch_size", self.batch_size, lo=1)
        if self.train_seqlen is not None:
            check_range("allocation.train_seqlen", self.train_seqlen, lo=2)
        if self.score_nsamples is not None:
            check_range("allocation.score_nsamples", self.score_nsamples, lo=1)
        if self.train_windows is not None:
            check_range("allocation.train_windows", self.train_windows, lo=1)
        check_choice("allocation.forward_mask", self.forward_mask, ("soft", "ste"))
        check_choice("allocation.train_data", self.train_data, TRAIN_DATA)
        if self.train_data == "wikitext103":
            from repro.data.sources import check_local
            check_local("allocation.train_data_path", self.train_data_path)
        check_choice("allocation.budget", self.budget, BUDGETS)
        check_choice("allocation.precision", self.precision, PRECISIONS)
        if self.memory_budget_gb is not None:
            check_range("allocation.memory_budget_gb", self.memory_budget_gb, lo=0.0, lo_open=True)
        check_range("allocation.log_every", self.log_every, lo=1)


# ---------------------------------------------------------------------------------------------- validation
def check_trainable_sparsity(sparsity: float, widths: List[int]) -> None:
    """Every row must drop at least one weight and keep at least one at init (t = s): 1 <= floor(s·C) < C."""
    narrow = min(widths)
    if not (0.0 < sparsity < 1.0) or int(sparsity * narrow) < 1 or int(sparsity * narrow) >= narrow:
        lo, hi = 1.0 / narrow, 1.0 - 1.0 / narrow
        raise ConfigError("sparsity", sparsity, f"a value in [{lo:.4g}, {hi:.4g}) for allocation=lua_llm",
                          f"(the trainable range: every row of the narrowest linear, {narrow} inputs, must drop "
                          f"and keep at least one weight at init)")


def _device_memory_gb(device: torch.device) -> Optional[float]:
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
    return None


# ---------------------------------------------------------------------------------------------- score pass
class _DenseWandaRanks(BlockCallback):
    """Looks only: per-row ranks of the dense Wanda metric |W|·‖X_j‖₂ for every linear of the block."""
    stats = frozenset({"sq_norm"})

    def __init__(self):
        self.ranks: Dict[str, torch.Tensor] = {}

    def on_group(self, ctx: BlockContext) -> None:
        for rel, lin in ctx.linears.items():
            metric = wanda_score(lin.weight.detach(), ctx.stats[rel]["sq_norm"])
            self.ranks[ctx.full_name(rel)] = T.descending_ranks(metric)


def dense_wanda_ranks(ctx: AllocationContext, nsamples: int) -> Dict[str, torch.Tensor]:
    return ctx.run_pass(_DenseWandaRanks(), nsamples).ranks


# ---------------------------------------------------------------------------------------------- allocator
def stream_windows(rows: List[str], tokenizer, seqlen: int, n: int, group: int = 50) -> torch.Tensor:
    """The released code's training stream (data/data_utils.py `dataloader_creator`, unshuffled): rows tokenised
    one by one (`tokenizer.encode`, special tokens as the tokenizer adds them), concatenated in groups of `group`
    rows, each group cut into whole windows (its tail dropped); the first `n` windows. Deviation: a group shorter
    than one window is skipped (the reference pads it with the ignored BOS id)."""
    out: List[List[int]] = []
    for start in range(0, len(rows), group):
        toks = [t for row in rows[start:start + group] for t in tokenizer.encode(row)]
        out += [toks[i:i + seqlen] for i in range(0, len(toks) - seqlen + 1, seqlen)]
        if len(out) >= n:
            return torch.tensor(out[:n], dtype=torch.long)
    if not out:
        raise RuntimeError(f"Lua-LLM: the WikiText-103 stream has no window of {seqlen} tokens")
    return torch.tensor(out, dtype=torch.long)


def _world():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:        # under torchrun: join the group the launcher prepared
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@register("allocation", "lua_llm", LuaLLMConfig)
class LuaLLM(Allocator):
    needs_calibration = True

    def allocate(self, ctx: AllocationContext) -> Dict[str, torch.Tensor]:
        cfg, run = self.cfg, ctx.run
        linears = ctx.adapter.all_linears(ctx.model)
        self._validate(ctx, linears)
        n_score = min(cfg.score_nsamples or ctx.calib_ids.shape[0], ctx.calib_ids.shape[0])
        ranks = dense_wanda_ranks(ctx, n_score)
        layers = self._masked_layers(linears, ranks, run.sparsity)
        result = self._train(ctx, layers)
        targets, report = self._harden(ctx, layers)
        report.update(iterations_done=result.iterations_done, stopped=result.stopped,
                      seconds_per_iteration=result.seconds_per_iteration,
                      final_kept_ratio_trained=result.history[-1]["kept_ratio"] if result.history else None,
                      applied_masks_equal_learned=True)       # the targets are the learned masks (step 4)
        if _world()[0] == 0:
            report["artefacts"] = self._save(ctx, layers, report, result)
        ctx.report.update(report)
        return targets

    # -- steps
    def _validate(self, ctx: AllocationContext, linears: Dict[str, nn.Linear]) -> None:
        cfg, run = self.cfg, ctx.run
        if ctx.calib_ids is None:
            raise ConfigError("calib", "none", "a calibration set (c4, wikitext2, local_text)",
                              "allocation=lua_llm needs windows for the Wanda statistics and for training")
        if run.pattern.name != "unstructured":
            raise ConfigError("pattern", run.pattern.label, "unstructured for allocation=lua_llm",
                              "Lua-LLM learns unstructured row thresholds")
        check_trainable_sparsity(run.sparsity, [l.in_features for l in linears.values()])
        seqlen = cfg.train_seqlen or ctx.calib_ids.shape[1]
        if seqlen > ctx.calib_ids.shape[1]:
            raise ConfigError("allocation.train_seqlen", cfg.train_seqlen,
                              f"at most the calibration seqlen ({ctx.calib_ids.shape[1]})")
        weight = next(ctx.model.parameters())
        mcfg = ctx.model.config
        n_prunable = sum(l.weight.numel() for l in linears.values())
        rank_bytes = 2 if max(l.in_features for l in linears.values()) <= 32767 else 4
        plan = T.memory_plan(sum(p.numel() for p in ctx.model.parameters()), n_prunable, weight.element_size(),
                           rank_bytes, sum(l.out_features for l in linears.values()),
                           max(l.weight.numel() for l in linears.values()), seqlen, cfg.batch_size,
                           getattr(mcfg, "hidden_size", 0), getattr(mcfg, "vocab_size", 0),
                           len(ctx.adapter.blocks(ctx.model)), cfg.gradient_checkpointing)
        budget = cfg.memory_budget_gb if cfg.memory_budget_gb is not None else _device_memory_gb(weight.device)
        ctx.report["memory_plan_gb"] = {k: round(v, 3) for k, v in plan.items()}
        if budget is not None and plan["total"] > budget:
            raise ConfigError("allocation.memory_budget_gb", budget,
                              f"at least the planned {plan['total']:.1f} GB for this model "
                              f"({', '.join(f'{k} {v:.1f}' for k, v in plan.items() if k != 'total')})",
                              "Enable allocation.gradient_checkpointing, lower allocation.train_seqlen or "
                              "allocation.batch_size, or use a larger device.")

    def _masked_layers(self, linears: Dict[str, nn.Linear], ranks: Dict[str, torch.Tensor],
                       sparsity: float) -> List[T.MaskedLayer]:
        init = sparsity if self.cfg.init == "target" else 0.5
        layers = []
        for name, lin in linears.items():
            t = nn.Parameter(torch.full((lin.out_features,), float(init), device=lin.weight.device))
            weight = T.gqa_count_weight(name, lin, linears) if self.cfg.gqa_weighting else 1.0
            layers.append(T.MaskedLayer(name, lin, t, ranks[name].to(lin.weight.device), weight))
        return layers

    def _training_windows(self, ctx: AllocationContext):
        """(windows, first index): extra windows from the calibration source, or the calibration set itself, or
        WikiText-103 train (`train_data=wikitext103`)."""
        if self.cfg.train_data == "wikitext103":
            from repro.data.sources import describe_source, load_rows

            n = self.cfg.train_windows or self.cfg.iterations * self.cfg.batch_size
            rows = load_rows("wikitext103_train", self.cfg.train_data_path)
            ids = stream_windows(rows, ctx.tokenizer, ctx.calib_ids.shape[1], n)
            ctx.report["train_windows_source"] = {"wikitext103_train": describe_source(
                "wikitext103_train", self.cfg.train_data_path), "windows": int(ids.shape[0])}
            return ids, 0
        if self.cfg.train_windows is None:
            n = ctx.calib_ids.shape[0]
            return ctx.calib_ids, min(self.cfg.score_nsamples or n, n) % n
        from repro.data.calibration import load_calibration

        run = ctx.run
        extra = dataclasses.replace(run.calib, nsamples=run.calib.nsamples + self.cfg.train_windows)
        ids = load_calibration(extra, ctx.tokenizer, ctx.calib_ids.shape[1]).input_ids
        if not torch.equal(ids[:run.calib.nsamples], ctx.calib_ids.cpu()):
            raise RuntimeError("Lua-LLM: re-sampling the calibration source did not reproduce the calibration "
                               "windows; the training windows would not continue the same sequence")
        ctx.report["train_windows_source"] = f"{run.calib.name} windows {run.calib.nsamples}..{ids.shape[0] - 1}"
        return ids[run.calib.nsamples:], 0

    def _train(self, ctx: AllocationContext, layers: List[T.MaskedLayer]) -> T.TrainResult:
        cfg = self.cfg
        ids, offset = self._training_windows(ctx)
        rank, world = _world()
        seqlen = cfg.train_seqlen or ids.shape[1]
        n = ids.shape[0]

        def segments(step: int) -> torch.Tensor:
            first = offset + (step * world + rank) * cfg.batch_size
            rows = [(first + b) % n for b in range(cfg.batch_size)]
            return ids[rows, :seqlen]

        ctx.report["effective_batch"] = cfg.batch_size * world     # windows per step, all processes (paper: 2)
        device = layers[0].thresholds.device
        amp = torch.bfloat16 if (device.type == "cuda" and cfg.precision == "bf16") else None
        blocks = ctx.adapter.blocks(ctx.model) if cfg.gradient_checkpointing else None
        log.info("Lua-LLM: training %d thresholds over %d linears, %d steps x %d windows x %d tokens (world %d)",
                 sum(l.thresholds.numel() for l in layers), len(layers), cfg.iterations, cfg.batch_size, seqlen,
                 world)
        with torch.enable_grad():
            return T.train_thresholds(
                ctx.model, layers, segments, 1.0 - ctx.run.sparsity, iterations=cfg.iterations, lr=cfg.lr,
                weight_decay=cfg.weight_decay, lam=cfg.lam, mode=cfg.forward_mask, autocast_dtype=amp,
                checkpoint_blocks=blocks, grad_sync=T.all_reduce_mean if world > 1 else None,
                log_every=cfg.log_every)

    def _harden(self, ctx: AllocationContext, layers: List[T.MaskedLayer]):
        s = ctx.run.sparsity
        total = sum(l.rank.numel() for l in layers)
        if self.cfg.budget == "uniform_rows":
            target = sum(l.rank.shape[0] * int(l.cols * s) for l in layers)
        else:
            target = int(total * s)
        learned_zeros = sum(int(T.row_zero_counts(l.thresholds, l.cols).sum()) for l in layers)
        zeros = T.exact_budget_zero_counts([l.thresholds for l in layers], [l.cols for l in layers], target)
        targets, per_layer = {}, {}
        for l, z in zip(layers, zeros):
            l.final_zeros = z
            targets[l.name] = ~final_keep_mask(l)
            per_layer[l.name] = float(z.sum()) / l.rank.numel()
        report = {"budget": self.cfg.budget, "target_zeros": target, "learned_zeros": learned_zeros,
                  "sparsity_learned": learned_zeros / total, "sparsity_final": target / total,
                  "layer_sparsity": per_layer}
        log.info("Lua-LLM: learned hard mask sparsity %.5f; budget %s -> %.5f (%d zeros)", learned_zeros / total,
                 self.cfg.budget, target / total, target)
        return targets, report

    def _save(self, ctx: AllocationContext, layers: List[T.MaskedLayer], report: dict, result: T.TrainResult) -> dict:
        out, paths = ctx.artifact_dir("lua_llm"), {}
        torch.save({l.name: {"learned": l.thresholds.detach().float().cpu(),
                             "final": (l.final_zeros.to(torch.float32) / l.cols),
                             "zeros_per_row": l.final_zeros.to(torch.int32), "in_features": l.cols}
                    for l in layers}, out / "thresholds.pt")
        paths["thresholds"] = str(out / "thresholds.pt")
        if self.cfg.save_masks:
            import numpy as np

            masks = {}
            for l in layers:
                keep = final_keep_mask(l)
                masks[l.name] = {"shape": tuple(keep.shape),
                                 "keep_packed": torch.from_numpy(np.packbits(keep.cpu().numpy(), axis=1))}
            torch.save(masks, out / "masks.pt")
            paths["masks"] = str(out / "masks.pt")
        (out / "history.json").write_text(json.dumps({"history": result.history, "stopped": result.stopped}))
        paths["history"] = str(out / "history.json")
        if self.cfg.plot:
            paths["plot"] = plot_layer_sparsity(report["layer_sparsity"], ctx.run.sparsity, out / "layer_sparsity.png")
        return paths


def final_keep_mask(layer: "T.MaskedLayer") -> torch.Tensor:
    """The hardened keep mask of one layer: row r keeps its `cols - zeros_r` highest-ranked weights."""
    return layer.rank.to(torch.long) < (layer.cols - layer.final_zeros.to(layer.rank.device)).view(-1, 1)


def unpack_mask(entry: dict) -> torch.Tensor:
    """The boolean keep-mask saved in masks.pt."""
    import numpy as np

    rows, cols = entry["shape"]
    return torch.from_numpy(np.unpackbits(entry["keep_packed"].numpy(), axis=1, count=cols).astype(bool))


def plot_layer_sparsity(layer_sparsity: Dict[str, float], target: float, path: Path) -> str:
    """Per-block sparsity of each projection type (one line each) and of the whole block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_kind: Dict[str, Dict[int, float]] = {}
    for name, s in layer_sparsity.items():
        parts = name.split(".")
        block = next(int(p) for p in parts if p.isdigit())
        by_kind.setdefault(parts[-1], {})[block] = s
    fig, ax = plt.subplots(figsize=(8, 4))
    for kind, series in by_kind.items():
        xs = sorted(series)
        ax.plot(xs, [series[x] for x in xs], marker=".", label=kind)
    ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("block")
    ax.set_ylabel("sparsity")
    ax.set_title("Lua-LLM learned sparsity per layer")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
