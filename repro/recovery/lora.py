"""LoRA, DoRA and masked LoRA recovery of a pruned model (peft + transformers' Trainer).

    repro run score=wanda sparsity=0.5 recovery=lora          # the papers' "+LoRA": a dense adapter, kept unmerged
    repro run score=wanda sparsity=0.5 recovery=dora          # DoRA (peft use_dora), kept unmerged
    repro run score=wanda sparsity=0.5 recovery=masked_lora   # delta ⊙ 1[W≠0], merged: exactly as sparse as before
    repro run score=wanda sparsity=0.6 recovery=lora recovery.data.format=alpaca recovery.data.task=boolq   # Table 3

Task-specific (RestoreLCC Table 3): `data.task` trains on that task's rows (repro/data/tasks.py: lm-eval's prompt,
loss on the gold answer only, so `data.format` must be alpaca; `data.subset` = the sample count).

Defaults are LoSA's baseline (wzhuang-xmu/LoSA main.py:68-85, 157-195: r=8, α=16, dropout 0.1, the 7 linears,
alpaca-gpt4 `text`, lr 2e-4); RestoreLCC's LoRA/DoRA rows override them (conf/experiment/restorelcc/).

A dense LoRA/DoRA delta on a sparse model is not sparse: the adapter stays **unmerged** for evaluation (`merge:
false`), and the report records the zero fraction of the base weights and of the effective weights
(`repro.recovery.base.weight_zero_fractions`). masked_lora merges by default (`merge: true`); the merged weights keep
exactly the base's zeros (repro/recovery/masked_lora.py).

Artifacts (`workdir`): `adapter.safetensors` (the trained adapter, peft state-dict keys) and `training.json` (the
training report). When they exist the adapter is loaded instead of trained again, so an evaluation-only change reuses
the fine-tuning. The loss curve is `workdir/loss_curve.{json,png}`.

On a structured prune (pattern=structured, SlimGPT) the run first cuts the model to its physically smaller form
(`slims_structured`, repro/run_steps.py `slim_for_recovery`), as the paper's LoRA/DoRA rows start from SlimGPT's
smaller checkpoint: on the zeroed model a LoRA delta would grow the removed heads and channels back, and DoRA's
weight norm per output row is zero for the removed rows and divides (NaN).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from repro.config import ConfigError, check_range
from repro.data.instruct import InstructDataConfig, check_instruction_data, describe, load_instruction_data
from repro.methods.base import MethodConfig
from repro.recovery.base import Recovery, weight_zero_fractions
from repro.recovery.training import TrainingConfig, fine_tune
from repro.registry import register

log = logging.getLogger(__name__)

LOSA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]   # LoSA main.py:73-81


def known_targets() -> List[str]:
    """Last name component of every prunable linear any architecture adapter knows (q_proj, fc1, ...)."""
    from repro.models.adapter import ADAPTERS
    return sorted({n.split(".")[-1] for a in ADAPTERS.values() for n in a.linear_names})


@dataclass
class LoraRecoveryConfig(MethodConfig):
    name: str = "lora"
    r: int = 8                           # LoSA main.py:69; RestoreLCC appendix (seed summary): 8
    alpha: float = 16                    # LoSA main.py:70; RestoreLCC: 16
    dropout: float = 0.1                 # LoSA main.py:82
    target_modules: list = field(default_factory=lambda: list(LOSA_TARGETS))
    merge: bool = False                  # merge into the weights after training (only exact for masked_lora)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: InstructDataConfig = field(default_factory=InstructDataConfig)

    def __post_init__(self):
        check_range("recovery.r", self.r, lo=1)
        check_range("recovery.alpha", self.alpha, lo=0.0, lo_open=True)
        check_range("recovery.dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        check_targets(self.target_modules)


def check_targets(targets, field_name: str = "recovery.target_modules") -> None:
    known = known_targets()
    if not targets:
        raise ConfigError(field_name, targets, f"a non-empty list of linear names from {known}")
    for i, t in enumerate(targets):
        if t not in known:
            raise ConfigError(f"{field_name}[{i}]", t, "one of " + ", ".join(known))


@dataclass
class DoraRecoveryConfig(LoraRecoveryConfig):
    name: str = "dora"


@dataclass
class MaskedLoraRecoveryConfig(LoraRecoveryConfig):
    name: str = "masked_lora"
    merge: bool = True


def lora_config(cfg: LoraRecoveryConfig, r: int | None = None):
    """The peft LoraConfig of a recovery config (masked layers for masked_lora and LoSA)."""
    from peft import LoraConfig

    from repro.recovery.masked_lora import masked_lora_config

    kwargs = dict(r=r or cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                  bias="none", task_type="CAUSAL_LM")
    if cfg.name in ("masked_lora", "losa"):
        return masked_lora_config(**kwargs)
    return LoraConfig(use_dora=cfg.name == "dora", **kwargs)


def save_adapter(peft_model, path: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)


def load_adapter(peft_model, path: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(peft_model, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise RuntimeError(f"{path}: keys that the adapter does not have: {unexpected[:5]}")


class _LoraBase(Recovery):
    slims_structured = True      # on a structured prune, train on the physically smaller model (base.py)

    def check(self, run) -> None:
        super().check(run)
        check_instruction_data(self.cfg.data)

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        from peft import get_peft_model

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        peft_model = get_peft_model(model, lora_config(cfg))
        adapter_file, train_file = workdir / "adapter.safetensors", workdir / "training.json"
        report = {"method": cfg.name, "data": describe(cfg.data), "adapter": str(adapter_file)}
        if adapter_file.is_file() and train_file.is_file():
            log.info("%s: reusing the trained adapter %s", cfg.name, adapter_file)
            load_adapter(peft_model, adapter_file)
            report["training"] = json.loads(train_file.read_text())
            report["reused_adapter"] = True
        else:
            train, val = load_instruction_data(cfg.data, tokenizer)
            report["training"] = fine_tune(peft_model, tokenizer, train, val, cfg.training, workdir, desc=cfg.name)
            save_adapter(peft_model, adapter_file)
            train_file.write_text(json.dumps(report["training"], indent=1))
        peft_model.eval()
        report["zeros_unmerged"] = weight_zero_fractions(model)
        if cfg.merge:
            peft_model.merge_and_unload()       # replaces the lora layers of `model` in place
            report["merged"] = True
        else:
            report["merged"] = False
        return report


@register("recovery", "lora", LoraRecoveryConfig)
class LoraRecovery(_LoraBase):
    pass


@register("recovery", "dora", DoraRecoveryConfig)
class DoraRecovery(_LoraBase):
    pass


@register("recovery", "masked_lora", MaskedLoraRecoveryConfig)
class MaskedLoraRecovery(_LoraBase):
    pass
