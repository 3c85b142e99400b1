"""Fine-tuning through transformers' `Trainer`: one function for every recovery method.

    from repro.recovery.training import TrainingConfig, fine_tune
    report = fine_tune(model, tokenizer, train_ds, eval_ds, cfg, workdir)

- `model`: any causal LM whose trainable parameters have `requires_grad=True` (a peft model, or a model with a few
  unfrozen vectors). Only those are optimised; nothing else is touched.
- `train_ds` / `eval_ds`: tokenised `datasets.Dataset`s with `input_ids`, `attention_mask`, `labels`
  (`repro.data.instruct.load_instruction_data`); `eval_ds` may be None.
- `cfg`: `TrainingConfig` (below). Recovery schemas embed it as their `training` node, with their paper's defaults.
- `workdir`: where the loss curve (`loss_curve.json`, `loss_curve.png`) and the Trainer's scratch files go.
- Returns the report for the record: optimizer actually used, steps, the loss curve's first/last values, runtime.
- A non-finite loss or gradient norm raises `FloatingPointError` after training (the run is recorded as failed).
- `regularizer` (optional): a function of no arguments returning a scalar tensor added to every training loss
  (LoFiT's and RestoreLCC's λ·Σ|θ| term, their `CustomSFTTrainer.compute_loss`).

Optimizer: `optim="auto"` = bitsandbytes' paged 8-bit AdamW (`paged_adamw_8bit`, LoSA main.py:161) when CUDA is
present and bitsandbytes is installed (`pip install .[gpu]`), torch AdamW otherwise; the report says which. The
schedule is `lr_scheduler` (linear) with `warmup_ratio`; `max_grad_norm` clips; bf16 autocast on GPU
(`precision="auto"`), fp32 on CPU. Every call builds a new Trainer, so LoSA's per-round fresh optimizer and
schedule come for free. `max_steps > 0` overrides `epochs` (env=offline sizes runs with it).

Padding: right padding with `pad_token_id` (EOS when the tokenizer has no pad token), labels padded with -100
(`DataCollatorForSeq2Seq`). Deviation from trl's SFTTrainer (LoSA): the loss masking of the EOS token is decided by
the data loader (`eos_in_loss`), not by `pad == eos`; the result is the same.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from repro.config import check_choice, check_range

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    learning_rate: float = 2e-4          # LoSA main.py:162
    epochs: float = 1.0                  # LoSA main.py:158 (one epoch per round)
    max_steps: int = -1                  # > 0 overrides epochs
    per_device_batch: int = 4            # LoSA: 4 (7B/8B), 2 (13B)
    grad_accum: int = 2                  # LoSA main.py:160
    warmup_ratio: float = 0.3            # LoSA main.py:167
    weight_decay: float = 0.001          # LoSA main.py:163
    max_grad_norm: float = 0.3           # LoSA main.py:166
    lr_scheduler: str = "linear"         # LoSA main.py:169
    optim: str = "auto"                  # auto (paged 8-bit AdamW on CUDA, torch AdamW on CPU) | any HF optim name
    precision: str = "auto"              # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    group_by_length: bool = True         # LoSA main.py:168
    logging_steps: int = 20              # LoSA main.py:161
    eval_each_epoch: bool = False        # RestoreLCC evaluates every epoch (only when a validation split exists)
    seed: int = 42                       # Trainer seed (data order, dropout)

    def __post_init__(self):
        check_range("recovery.training.learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        check_range("recovery.training.epochs", self.epochs, lo=0.0, lo_open=True)
        check_range("recovery.training.per_device_batch", self.per_device_batch, lo=1)
        check_range("recovery.training.grad_accum", self.grad_accum, lo=1)
        check_range("recovery.training.warmup_ratio", self.warmup_ratio, lo=0.0, hi=1.0, hi_open=True)
        check_range("recovery.training.logging_steps", self.logging_steps, lo=1)
        check_choice("recovery.training.precision", self.precision, ("auto", "bf16", "fp32"))
        check_choice("recovery.training.lr_scheduler", self.lr_scheduler,
                     ("linear", "cosine", "constant", "constant_with_warmup"))


def _version_specific_args(args_cls, cfg: TrainingConfig) -> dict:
    """transformers 5 folds warmup_ratio into a fractional warmup_steps and group_by_length into
    train_sampling_strategy; 4.x has the separate arguments. Both mean ceil(ratio · total steps) warmup steps."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_cls)}
    out = {}
    if "warmup_ratio" in names:
        out["warmup_ratio"] = cfg.warmup_ratio
    else:
        out["warmup_steps"] = cfg.warmup_ratio
    if "train_sampling_strategy" in names:
        out["train_sampling_strategy"] = "group_by_length" if cfg.group_by_length else "random"
    else:
        out["group_by_length"] = cfg.group_by_length
    return out


def resolve_optim(cfg: TrainingConfig) -> str:
    if cfg.optim != "auto":
        return cfg.optim
    if torch.cuda.is_available():
        try:
            import bitsandbytes  # noqa: F401
            return "paged_adamw_8bit"
        except ImportError:
            log.warning("bitsandbytes is not installed: torch AdamW instead of LoSA's paged 8-bit AdamW "
                        "(pip install .[gpu])")
    return "adamw_torch"


def fine_tune(model, tokenizer, train_ds, eval_ds, cfg: TrainingConfig, workdir: Path,
              desc: str = "fine-tune", regularizer=None) -> dict:
    """Train the parameters of `model` that require grad; return the report (see the module docstring)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    saved = (tokenizer.pad_token, tokenizer.padding_side)      # restored after training (evaluation shares it)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    try:
        return _train(model, tokenizer, train_ds, eval_ds, cfg, workdir, desc, regularizer)
    finally:
        if saved[0] is None:
            tokenizer.pad_token = None
        tokenizer.padding_side = saved[1]


def _regularized(trainer_cls, regularizer):
    if regularizer is None:
        return trainer_cls

    class RegularizedTrainer(trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            if not model.training:                 # evaluation reports the plain loss
                return out
            if return_outputs:
                return out[0] + regularizer(), out[1]
            return out + regularizer()
    return RegularizedTrainer


def _train(model, tokenizer, train_ds, eval_ds, cfg: TrainingConfig, workdir: Path, desc: str,
           regularizer=None) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    optim = resolve_optim(cfg)
    cuda = next(model.parameters()).device.type == "cuda"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    do_eval = eval_ds is not None and cfg.eval_each_epoch
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch, per_device_eval_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type=cfg.lr_scheduler, optim=optim, bf16=bf16, fp16=False,
        logging_steps=cfg.logging_steps, logging_first_step=True, logging_nan_inf_filter=False, save_strategy="no",
        eval_strategy="epoch" if do_eval else "no", report_to=[], seed=cfg.seed, data_seed=cfg.seed,
        remove_unused_columns=False, disable_tqdm=False, dataloader_num_workers=0, use_cpu=not cuda,
        **_version_specific_args(TrainingArguments, cfg))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    was_training = model.training
    trainer = _regularized(Trainer, regularizer)(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds if do_eval else None,
                      data_collator=collator, processing_class=tokenizer)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%s: %d trainable parameters, %d rows, optimizer %s", desc, trainable, len(train_ds), optim)
    out = trainer.train()
    model.train(was_training)
    history = [h for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    curve = {"train": [(h["step"], h["loss"]) for h in history if "loss" in h],
             "eval": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]}
    report = {"optimizer": optim, "precision": "bf16" if bf16 else "fp32", "trainable_params": trainable,
              "train_rows": len(train_ds), "steps": trainer.state.global_step,
              "train_loss": out.training_loss, "runtime_s": out.metrics.get("train_runtime"),
              "first_loss": curve["train"][0][1] if curve["train"] else None,
              "last_loss": curve["train"][-1][1] if curve["train"] else None}
    if eval_ds is not None:
        report["eval_loss"] = trainer.evaluate(eval_ds)["eval_loss"]
    save_loss_curve(curve, workdir, desc)
    del trainer
    check_finite(history, out.training_loss, desc, workdir)
    return report


def check_finite(history: list, training_loss: float, desc: str, workdir: Path) -> None:
    """A diverged fine-tuning (NaN/inf loss or gradient norm) fails the run instead of recording a broken model as
    ok: the Trainer would otherwise keep stepping, and its default log filter hides NaN losses."""
    import math

    bad = [h for h in history if any(k in h and not math.isfinite(float(h[k])) for k in ("loss", "grad_norm"))]
    if bad or not math.isfinite(training_loss):
        first = bad[0] if bad else {"step": "end", "loss": training_loss}
        raise FloatingPointError(f"{desc}: fine-tuning diverged, non-finite loss or gradient norm (first at step "
                                 f"{first.get('step')}: {first}); loss curve in {workdir}/loss_curve.json")


def save_loss_curve(curve: dict, workdir: Path, title: str) -> None:
    (workdir / "loss_curve.json").write_text(json.dumps(curve, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:          # pragma: no cover - matplotlib is a dependency
        return
    fig, ax = plt.subplots(figsize=(5, 3))
    for key, pts in curve.items():
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", label=key)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(workdir / "loss_curve.png", dpi=100)
    plt.close(fig)
