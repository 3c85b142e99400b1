"""LoFiT: localized fine-tuning of attention-head representations, as a recovery baseline (`recovery=lofit`).

Paper: Yin et al., "LoFiT: Localized Fine-tuning on LLM Representations" (NeurIPS 2024); reference code fc2869/lo-fit
@ebd344a (`lofit_trainer.py`, `models/modeling_llama.py`, `utils/trainers.py`). RestoreLCC (whose
own code is derived from LoFiT) compares against it with "10%, 20% and 30% of the heads, best reported" [SEED].

    repro run score=wanda sparsity=0.5 recovery=lofit                    # 10% of the heads
    repro run score=wanda sparsity=0.5 recovery=lofit recovery.heads=0.3
    repro run score=wanda sparsity=0.6 recovery=lofit recovery.data.task=boolq recovery.data.subset=200   # Table 3

Task-specific (RestoreLCC Table 3): `data.task` trains both steps on that task's rows (repro/data/instruct.py,
repro/data/tasks.py: lm-eval's prompt, loss on the gold answer only; `data.subset` = the sample count).

Each head h of layer l edits its slice z of the o_proj INPUT (the head's output) at every token:

    step 1, head selection (`--lofit_component A`): z ← (1 + A_h) ⊙ z for EVERY head, A ~ N(0, 1e-3), trained with
            the task loss + λ·Σ|A| (LoFiT's CustomSFTTrainer L1 term; lr 5e-3, 5 epochs, λ = 5e-4 in its scripts);
            the heads are ranked by ‖A_h‖₂ over all L·H heads, the top K = ⌊heads · L·H⌋ are kept
    step 2, bias tuning (`--lofit_component v`): z ← z + v_h on the K selected heads only, v ~ N(0, 1e-3); the scaling
            vectors of step 1 are discarded (LoFiT loads a fresh model for step 2)

Both steps train through `repro.recovery.training.fine_tune` (transformers' Trainer; the L1 term through its
`regularizer`); every model weight is frozen. Export: v is constant, so it folds into an o_proj bias,
b_o = W_O · concat_h(v_h) (zeros for the other heads): the linear weights keep exactly their zeros, no hook remains.

Settings not stated by RestoreLCC are marked in conf/recovery/lofit.yaml: the data and step-2 trainer are
RestoreLCC's (the 2k Alpaca subset with completion-only loss, 3 epochs, batch 8, no warmup) with LoFiT's step-2 lr
(1e-2); step 1 is LoFiT's scripts'. Architectures: LLaMA, Mistral, OPT (preflight; o_proj = the adapter's attention
output projection, OPT `self_attn.out_proj` whose existing bias the fold adds to; repro/recovery/_heads.py).
Deviations: the edit is a forward pre-hook on o_proj (LoFiT edits a custom LLaMA modelling file);
heads are counted per layer from o_proj's input width (a structured model with fewer heads in a layer works);
padding-token positions are edited too, as in LoFiT (their loss is masked); the L1 term is left out of evaluation
losses (LoFiT's compute_loss adds it to its eval loss too: reported numbers only, its scripts keep no best checkpoint);
exact ties of ‖A_h‖ rank the lower layer·H + head first (LoFiT: numpy's unstable argsort, order size-dependent).
Golden test: tests/test_lofit_golden.py against LoFiT's own modelling file, compute_loss and selection block
(tools/golden/lofit_fixture.py): logits ~1e-6, loss bit-identical, A after 3 Trainer steps ~1e-7, same top heads.
Artifacts: `workdir/lofit.safetensors` (selected heads and biases per layer) and `lofit.json`; reused by an
evaluation-only change.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

from repro.config import ConfigError, check_range
from repro.data.instruct import InstructDataConfig, check_instruction_data, describe, load_instruction_data
from repro.methods.base import MethodConfig
from repro.recovery._dense import known_config, load_artifacts, save_artifacts, shape_of
from repro.recovery._heads import add_to_bias, attention_outputs, check_arch, head_shape, o_proj_edits
from repro.recovery.base import Recovery
from repro.recovery.training import TrainingConfig, fine_tune
from repro.registry import register

log = logging.getLogger(__name__)
WEIGHTS, META = "lofit.safetensors", "lofit.json"


@dataclass
class LofitSelection:
    learning_rate: float = 5e-3          # LoFiT scripts, step 1 (--lofit_component A --lr 5e-3)
    epochs: float = 5                    # LoFiT scripts, step 1 (--num_epoch 5)
    l1_lambda: float = 5e-4              # LoFiT scripts, step 1 (--l1_lambda 5e-4)

    def __post_init__(self):
        check_range("recovery.selection.learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        check_range("recovery.selection.epochs", self.epochs, lo=0.0, lo_open=True)
        check_range("recovery.selection.l1_lambda", self.l1_lambda, lo=0.0)


@dataclass
class LofitConfig(MethodConfig):
    name: str = "lofit"
    heads: float = 0.1                   # fraction of all L·H heads (RestoreLCC [SEED]: 10%, 20%, 30%)
    init_std: float = 1e-3               # A and v ~ N(0, 1e-3) (lofit_trainer.py)
    selection: LofitSelection = field(default_factory=LofitSelection)
    training: TrainingConfig = field(default_factory=TrainingConfig)   # step 2 (bias tuning)
    data: InstructDataConfig = field(default_factory=InstructDataConfig)

    def __post_init__(self):
        check_range("recovery.heads", self.heads, lo=0.0, hi=1.0, lo_open=True)
        check_range("recovery.init_std", self.init_std, lo=0.0)


def head_count(fraction: float, total: int) -> int:
    k = int(fraction * total)
    if k < 1:
        raise ConfigError("recovery.heads", fraction, f"a fraction in (0, 1] selecting at least one of the "
                          f"{total} heads (at least {1 / total:.4g})")
    return k


def rank_heads(scores: List[torch.Tensor]) -> List[tuple]:
    """All (layer, head) pairs by descending score over all layers (LoFiT: argsort of the flattened L×H norms);
    exact ties: lower layer·H + head first (stable; the reference's numpy quicksort leaves tie order unspecified)."""
    flat = torch.cat([s.flatten() for s in scores])
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    local = torch.cat([torch.arange(s.numel()) for s in scores])
    order = torch.argsort(flat, descending=True, stable=True)
    return [(int(owner[j]), int(local[j])) for j in order]


def top_heads(scores: List[torch.Tensor], k: int) -> Dict[int, List[int]]:
    """The k (layer, head) pairs with the largest scores over all layers, per layer (ascending head index)."""
    out: Dict[int, List[int]] = {}
    for layer, head in sorted(rank_heads(scores)[:k]):
        out.setdefault(layer, []).append(head)
    return out


def l1_penalty(scales, l1_lambda: float) -> torch.Tensor:
    """LoFiT's step-1 regulariser λ·Σ|A| over every scaling vector (CustomSFTTrainer.compute_loss: all trainable
    parameters, which in step 1 are exactly the A's)."""
    return l1_lambda * sum(e.scale.abs().sum() for e in scales)


class HeadEdit(nn.Module):
    """LoFiT's edit of one layer's o_proj input (…, H·d): z_h ← (1 + A_h) ⊙ z_h (all heads) or z_h + v_h (`heads`)."""

    def __init__(self, n_heads: int, head_dim: int, heads=None, std: float = 1e-3, generator=None):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        if heads is None:
            self.scale = nn.Parameter(torch.randn(n_heads, head_dim, generator=generator) * std)
            self.bias = None
        else:
            self.scale = None
            self.register_buffer("heads", torch.tensor(heads, dtype=torch.long))
            self.bias = nn.Parameter(torch.randn(len(heads), head_dim, generator=generator) * std)

    def offset(self) -> torch.Tensor:
        """concat_h(v_h) with zeros for the unselected heads: (H·d,)."""
        full = torch.zeros(self.n_heads, self.head_dim, dtype=self.bias.dtype, device=self.bias.device)
        return full.index_add(0, self.heads, self.bias).reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            z = x.view(*x.shape[:-1], self.n_heads, self.head_dim) * (1 + self.scale.to(x.dtype))
            return z.reshape(x.shape)
        return x + self.offset().to(x.dtype)


def edits_on(model, edits: Dict[int, HeadEdit]):
    """Attach `edits` ({layer: edit}) as o_proj pre-hooks and submodules; always detached on exit."""
    return o_proj_edits(model, edits, "lofit_edit", lambda m, x: m(x))


@torch.no_grad()
def fold_biases(model, biases: Dict[int, tuple]) -> None:
    """b_o += W_O · concat_h(v_h) for every layer with selected heads: {layer: (heads, v (k × d))}."""
    o_projs = attention_outputs(model)
    for i, (heads, v) in biases.items():
        o = o_projs[i]
        edit = HeadEdit(o.in_features // v.shape[1], v.shape[1], list(heads))
        edit.bias.copy_(v)
        add_to_bias(o, o.weight.float() @ edit.offset().float().to(o.weight.device))


@register("recovery", "lofit", LofitConfig)
class Lofit(Recovery):
    def check(self, run) -> None:
        super().check(run)
        check_instruction_data(self.cfg.data)
        config = known_config(run.model)
        if config is not None:
            check_arch(config.get("model_type"), "lofit")
            s = shape_of(config)
            if s["layers"] and s["heads"]:
                head_count(self.cfg.heads, s["layers"] * s["heads"])

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        cfg, workdir = self.cfg, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        check_arch(model.config.model_type, "lofit")
        head_dim = head_shape(model.config)[1]
        n_heads = [o.in_features // head_dim for o in attention_outputs(model)]
        k = head_count(cfg.heads, sum(n_heads))
        stored = load_artifacts(workdir, WEIGHTS, META)
        if stored is not None:
            flat, report = stored
            biases = {int(n.split(".")[1]): (flat[n].tolist(), flat[n.replace(".heads", ".bias")])
                      for n in flat if n.endswith(".heads")}
            report["reused_biases"] = True
        else:
            biases, report = self._train(model, tokenizer, n_heads, head_dim, k, workdir)
        fold_biases(model, biases)
        report["folded_into_o_proj_bias"] = True
        return report

    def _train(self, model, tokenizer, n_heads, head_dim, k, workdir: Path):
        cfg = self.cfg
        train, val = load_instruction_data(cfg.data, tokenizer)
        if len(train) == 0:
            raise ConfigError("recovery.data.max_length", cfg.data.max_length,
                              "a length that leaves some completion tokens: every training row was dropped")
        grads = {p: p.requires_grad for p in model.parameters()}
        model.requires_grad_(False)
        gen = torch.Generator().manual_seed(cfg.training.seed)
        device, dtype = next(model.parameters()).device, torch.float32
        report = {"method": "lofit", "data": describe(cfg.data), "heads_total": sum(n_heads), "heads_selected": k}
        try:
            scales = [HeadEdit(h, head_dim, std=cfg.init_std, generator=gen).to(device, dtype) for h in n_heads]
            sel_cfg = dataclasses.replace(cfg.training, learning_rate=cfg.selection.learning_rate,
                                          epochs=cfg.selection.epochs)
            l1 = cfg.selection.l1_lambda
            with edits_on(model, dict(enumerate(scales))):
                report["selection"] = fine_tune(model, tokenizer, train, val, sel_cfg, workdir / "select",
                                                desc="LoFiT head selection",
                                                regularizer=lambda: l1_penalty(scales, l1))
            chosen = top_heads([e.scale.detach().float().norm(dim=1).cpu() for e in scales], k)
            report["selected"] = [[i, h] for i, hs in sorted(chosen.items()) for h in hs]
            edits = {i: HeadEdit(n_heads[i], head_dim, hs, cfg.init_std, gen).to(device, dtype)
                     for i, hs in sorted(chosen.items())}
            with edits_on(model, edits):
                report["training"] = fine_tune(model, tokenizer, train, val, cfg.training, workdir / "bias",
                                               desc="LoFiT bias tuning")
        finally:
            for p, g in grads.items():
                p.requires_grad_(g)
        out = {i: (chosen[i], e.bias.detach().cpu()) for i, e in edits.items()}
        report["trainable_params"] = sum(v.numel() for _, v in out.values())
        flat = {}
        for i, (hs, v) in out.items():
            flat[f"layer.{i}.heads"], flat[f"layer.{i}.bias"] = torch.tensor(hs, dtype=torch.long), v
        save_artifacts(workdir, WEIGHTS, META, flat, report)
        return out, report
