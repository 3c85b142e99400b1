"""RestoreLCC (recovery=restorelcc): lost-component compensation of a pruned LLM (Zhang et al., NeurIPS 2025).

    repro run score=wanda sparsity=0.5 recovery=restorelcc                       # sbert negatives (needs the model)
    repro run model=smollm2-135m env=offline score=wanda sparsity=0.5 recovery=restorelcc   # offline stand-ins

Reference: zijian678/restorelcc@b1a8e09 (RestoreLCC_train.py, models/modeling_llama.py:258-269, 376-407,
utils/components.py), read and re-expressed; research note losa_restorelcc.md §2. Steps:
1. Head identification (repro/recovery/lcc_probe.py): per-head lost components of the pruned vs the dense model and
   contrastive probes, ranked by validation accuracy; the top `top_heads` (count or fraction) are selected.
2. Compensation: for every selected head c = V^T beta + b (V = all d_h SVD directions of that head's dZ, frozen;
   beta, b trained, init N(0, init_std=1e-3)), added to the head's slice of the o_proj input at every token (a
   forward pre-hook owned by `compensate`, removed on exit; o_proj = the adapter's attention output projection,
   LLaMA/Mistral `self_attn.o_proj`, OPT `self_attn.out_proj`, repro/recovery/_heads.py). Trained with
   repro.recovery.training.fine_tune (transformers Trainer), response-only loss (data.format=alpaca), base weights
   frozen.
   Table 4's ablation axes (repro/recovery/lcc_select.py): `head_selection` = probe (the method) | random (seeded
   by `selection_seed`) | mse | kl ([RECON]: mean KL of the softmaxed dense vs pruned head activations; neither
   MSE nor KL selection is in the reference code) — random/mse/kl train no probe; `compensation` = full | no_bias
   (c = V^T beta, "w/o b") | bias_only (c = b, "w/o Σβv"). Both are in the record (config; the report's
   `head_selection` / `compensation_form`).
3. Export: c is constant, so it is folded into an o_proj bias b_o = W_O · concat(c) (the paper's inference merge;
   the reference code keeps the runtime add). The linear weights are untouched (their zeros stay exactly), the
   record holds the folded-vs-runtime logit difference. OPT's out_proj has a bias already: the fold adds to it.
   `save_model: true` writes the folded model to `<workdir>/model`: LLaMA has one `attention_bias` flag for q/k/v/o,
   so the saved config sets it and q/k/v get zero biases (OPT: `enable_bias`, on by default); plain
   `AutoModelForCausalLM.from_pretrained` then loads it exactly. Mistral's o_proj cannot hold a bias in
   transformers (no flag), so `save_model: true` is refused there at preflight (its in-process evaluation works).

Task-specific recovery (paper Table 3): `task` = boolq | rte | arc_easy | arc_challenge trains and probes on
`task_samples` (200: [SEED] "200 BoolQ samples") rows of that task's training split (repro/data/tasks.py: lm-eval's
prompt ending "\nAnswer:", completion = the gold answer " yes"/" no", " True"/" False" or " " + the choice text,
loss on the completion only, as the reference's response template "\nAnswer:"); probe negatives swap the label
(BoolQ/RTE) or take the most similar other choice (ARC; `negatives` sbert/lexical as for Alpaca). `task: alpaca`
is the general recovery on `data`. Offline: synthetic stand-in rows (env=offline `data.task_path`).
Why `recovery.task` and not `recovery.data.task` (the baselines' spelling, recovery=lofit|lora|dora): here the task
also picks the probe pairs (label swap / most similar choice) and has the value `alpaca`, `task_samples` (200)
replaces the Alpaca subset (2000), and both fields are in every stored RestoreLCC run's identity; `data.task` is
refused with a ConfigError naming `recovery.task` (`RestoreLccConfig.train_data()` maps one onto the other).

Artifacts (`workdir`, the recover stage's folder): `compensation.safetensors` (per layer: selected heads, c, and
beta / b where trained) and `training.json`; when both exist they are folded again without probing or training (eval-only changes).
The probe is cached separately under `<results>/restorelcc_probe/<key>` (key includes the prune id) so another
top_heads or lr reuses it.

Deviations (also experiments/restorelcc/NOTES.md): activations in the model's dtype and batched with right padding
(reference: fp16, one sample at a time, pyvene); float64 SVD; probes trained together with seeded nn.Linear-style
init (reference: global RNG); stable tie order for equal accuracies (reference: torch.topk); head index layer*H + h
(reference: layer*L + h, wrong when L != H); the compensation parameters are fp32 with bf16 autocast on GPU
(reference: bf16 parameters); no `[PAD]` token is added (the reference adds one and resizes the embeddings); no
`set_detect_anomaly`; negatives=lexical is an offline stand-in for SBERT; model types llama, mistral, opt (the
reference: LLaMA only, its own modelling file). Tasks: the reference's task files are not shipped, so its prompts
are taken as lm-eval's (its targets and response template match them), drawn as a seeded subset of the hub's train
split; ARC's negative excludes the gold choice by its index (the reference's index -1 quirk, when the gold text is
not among the choices, cannot occur).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.config import ConfigError, check_choice, check_range
from repro.data.instruct import InstructDataConfig, check_instruction_data, describe, load_instruction_data, load_rows
from repro.data.tasks import TASKS as TASK_DATA
from repro.methods.base import MethodConfig
from repro.recovery._dense import save_tensors
from repro.recovery.base import Recovery
from repro.recovery.lcc_math import compensation, fold_bias, n_selected
from repro.recovery._heads import add_to_bias, attention_outputs, check_arch, head_shape, o_proj_edits, save_folded
from repro.recovery.lcc_select import COMPENSATIONS, SELECTIONS, choose_heads
from repro.recovery.training import TrainingConfig, fine_tune
from repro.registry import register

log = logging.getLogger(__name__)
TASKS = ("alpaca",) + tuple(TASK_DATA)     # alpaca = general recovery (recovery.data); the others: repro/data/tasks.py
LABEL_SWAP = ("boolq", "rte")              # two fixed answers: the negative is the other one (no similarity model)


def _training() -> TrainingConfig:     # RestoreLCC_train.py:216-233 + train.sh (see conf/recovery/restorelcc.yaml)
    return TrainingConfig(learning_rate=1e-3, epochs=3, per_device_batch=8, grad_accum=1, warmup_ratio=0.0,
                          weight_decay=0.0, max_grad_norm=1.0, lr_scheduler="linear", optim="adamw_torch",
                          group_by_length=False, logging_steps=10, eval_each_epoch=True, seed=42)


def _data() -> InstructDataConfig:
    return InstructDataConfig(path="tatsu-lab/alpaca", format="alpaca", subset=2000, val_fraction=0.0, seed=42,
                              max_length=500, append_eos=False)


@dataclass
class RestoreLccConfig(MethodConfig):
    name: str = "restorelcc"
    task: str = "alpaca"                  # --spec_task: alpaca | boolq | rte | arc_easy | arc_challenge
    task_samples: int = 200               # --num_train_samples for a task ([SEED]: 200 BoolQ samples)
    top_heads: Any = 256                  # --use_topk_heads (count) or a fraction of all heads
    k: int = 10                           # components of the probe's lost component (code k=10; paper K=1)
    negatives: str = "sbert"              # sbert (paper) | lexical (offline stand-in)
    sbert_model: str = "sentence-transformers/all-MiniLM-L6-v2"   # hub id or local directory
    probe_samples: int = 1000             # components.py:360-363 (first 1000 Alpaca rows)
    probe_max_length: int = 512           # components.py:213-220
    probe_epochs: int = 200               # components.py:305
    probe_lr: float = 0.01                # components.py:301
    probe_val_fraction: float = 0.3       # components.py:289
    probe_seed: int = 42                  # components.py:289
    capture_batch: int = 8                # ours (reference: one sample at a time)
    init_std: float = 1e-3                # RestoreLCC_train.py:307-319
    save_model: bool = False              # write the folded model to <workdir>/model
    head_selection: str = "probe"         # Table 4: probe (the method) | random | mse | kl (lcc_select.py)
    selection_seed: int = 42              # ours: the seed of head_selection=random
    compensation: str = "full"            # Table 4: full (V^T beta + b) | no_bias (V^T beta) | bias_only (b)
    training: TrainingConfig = field(default_factory=_training)
    data: InstructDataConfig = field(default_factory=_data)

    def __post_init__(self):
        check_choice("recovery.task", self.task, TASKS)
        check_range("recovery.task_samples", self.task_samples, lo=4)   # the 70/30 pair split needs a few pairs
        if self.data.task is not None:
            raise ConfigError("recovery.data.task", self.data.task, "null: RestoreLCC's task is recovery.task "
                              f"(one of {', '.join(TASKS)})")
        check_choice("recovery.negatives", self.negatives, ("sbert", "lexical"))
        check_choice("recovery.head_selection", self.head_selection, SELECTIONS)
        check_choice("recovery.compensation", self.compensation, COMPENSATIONS)
        n_selected(self.top_heads, 1 << 30)                  # type / fraction range; the count is checked later
        check_range("recovery.k", self.k, lo=1)
        check_range("recovery.probe_samples", self.probe_samples, lo=4)
        check_range("recovery.probe_max_length", self.probe_max_length, lo=2)
        check_range("recovery.probe_epochs", self.probe_epochs, lo=1)
        check_range("recovery.probe_lr", self.probe_lr, lo=0.0, lo_open=True)
        check_range("recovery.probe_val_fraction", self.probe_val_fraction, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        check_range("recovery.capture_batch", self.capture_batch, lo=1)
        check_range("recovery.init_std", self.init_std, lo=0.0)
        if self.data.format != "alpaca":
            raise ConfigError("recovery.data.format", self.data.format,
                              "'alpaca' (RestoreLCC needs instruction/input/output rows to build probe pairs)")

    def train_data(self) -> InstructDataConfig:
        """The rows RestoreLCC probes and trains on: `recovery.data` for alpaca, else `task_samples` rows of the
        task (repro/data/tasks.py; `data.task_path`, `max_length`, `seed`, `rows`, `val_fraction` still apply)."""
        if self.task == "alpaca":
            return self.data
        return dataclasses.replace(self.data, task=self.task, subset=self.task_samples)


def known_architecture(model_cfg) -> dict | None:
    """model_type / layers / heads / head_dim when readable without loading weights (random_init, config.json, a
    converted GGUF's cached config.json); None otherwise (then checked after loading, before any heavy work)."""
    from repro.models.loading import known_config

    spec = known_config(model_cfg)
    if spec is None or "num_attention_heads" not in spec:
        return None
    heads, head_dim = head_shape(spec)
    return {"model_type": spec.get("model_type"), "layers": spec["num_hidden_layers"], "heads": heads,
            "head_dim": head_dim}


def check_architecture(arch: dict, cfg: RestoreLccConfig) -> None:
    check_arch(arch["model_type"], "restorelcc", cfg.save_model)
    n_selected(cfg.top_heads, arch["layers"] * arch["heads"])
    if cfg.k > arch["head_dim"]:
        raise ConfigError("recovery.k", cfg.k, f"at most the head dimension ({arch['head_dim']})")


def check_negatives(cfg: RestoreLccConfig) -> None:
    import importlib.util

    from repro.models.loading import is_offline

    if cfg.negatives != "sbert" or cfg.task in LABEL_SWAP:
        return
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ConfigError("recovery.negatives", "sbert", "'lexical' (offline stand-in), or install "
                          "sentence-transformers (pip install .[restorelcc]) for the paper's SBERT negatives")
    local = Path(cfg.sbert_model).expanduser()
    if cfg.sbert_model.startswith((".", "/", "~")) and not local.is_dir():
        raise ConfigError("recovery.sbert_model", cfg.sbert_model, "an existing sentence-transformers directory")
    if not local.is_dir() and is_offline():
        raise ConfigError("recovery.sbert_model", cfg.sbert_model, "a local sentence-transformers directory while "
                          "HF_HUB_OFFLINE=1, or recovery.negatives=lexical (offline stand-in)")


class HeadCompensation(nn.Module):
    """One layer's learned compensation: c_h = V_h^T beta_h + b_h for its selected heads (`form`: full; no_bias
    drops b, bias_only drops V and beta — those are then None, not parameters)."""

    def __init__(self, heads: list[int], v, n_heads: int, std: float, generator: torch.Generator,
                 form: str = "full", head_dim: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.register_buffer("heads", torch.tensor(heads, dtype=torch.long))
        n, d = len(heads), head_dim if v is None else v.shape[-1]
        self.register_buffer("v", None if form == "bias_only" else v.float())
        draw = lambda: nn.Parameter(torch.randn(n, d, generator=generator) * std)   # noqa: E731
        self.beta = None if form == "bias_only" else draw()
        self.b = None if form == "no_bias" else draw()

    def comps(self) -> torch.Tensor:
        return compensation(self.v, self.beta, self.b)

    def vector(self) -> torch.Tensor:
        c = self.comps()
        return torch.zeros(self.n_heads, c.shape[1], device=c.device).index_copy(0, self.heads, c).flatten()


@torch.no_grad()
def live_heads(model, n_heads: int) -> torch.Tensor:
    """(layers, heads) bool: a head is live unless its o_proj input columns are all zero (removed by SlimGPT)."""
    rows = []
    for o_proj in attention_outputs(model):
        w = o_proj.weight
        rows.append((w.reshape(w.shape[0], n_heads, -1) != 0).any(dim=2).any(dim=0).cpu())
    return torch.stack(rows)


def compensate(model, comps: dict[int, HeadCompensation]):
    """Attach `comps` (layer -> module) as `o_proj.restorelcc` and add their vectors before o_proj; always undone."""
    return o_proj_edits(model, comps, "restorelcc", lambda m, x: x + m.vector().to(x.dtype))


@torch.no_grad()
def fold_into_o_proj(model, comps: dict[int, dict[int, torch.Tensor]]) -> int:
    """o_proj.bias += W_O · concat(c) per layer ({layer: {head: c}}); returns the number of bias entries added."""
    head_dim = head_shape(model.config)[1]
    o_projs, added = attention_outputs(model), 0
    for i, per_head in comps.items():
        o = o_projs[i]
        b = fold_bias(o.weight.double(), {h: c.double() for h, c in per_head.items()}, head_dim)
        added += b.numel() if o.bias is None else 0
        add_to_bias(o, b)
    return added


def _save_comps(path: Path, comps: dict[int, HeadCompensation]) -> None:
    state = {}
    for i, m in comps.items():
        state.update({f"{i}.heads": m.heads, f"{i}.c": m.comps().detach().clone()})   # bias_only: c is b itself
        state.update({f"{i}.{n}": p for n, p in m.named_parameters()})   # beta / b: what the form trains
    save_tensors(path, state)


def _load_comps(path: Path) -> dict[int, dict[int, torch.Tensor]]:
    from safetensors.torch import load_file

    state = load_file(str(path))
    layers = sorted({int(k.split(".")[0]) for k in state})
    return {i: dict(zip(state[f"{i}.heads"].tolist(), state[f"{i}.c"])) for i in layers}


@register("recovery", "restorelcc", RestoreLccConfig)
class RestoreLccRecovery(Recovery):
    def check(self, run) -> None:
        super().check(run)
        check_instruction_data(self.cfg.train_data())
        check_negatives(self.cfg)
        arch = known_architecture(run.model)
        if arch is not None:
            check_architecture(arch, self.cfg)

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        from repro.stages import resolve

        cfg, workdir = self.cfg, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        mc = model.config
        n_layers, (n_heads, head_dim) = len(attention_outputs(model)), head_shape(mc)
        check_architecture({"model_type": mc.model_type, "layers": n_layers, "heads": n_heads, "head_dim": head_dim},
                           cfg)
        comp_file, train_file = workdir / "compensation.safetensors", workdir / "training.json"
        report = {"method": "restorelcc", "task": cfg.task, "data": describe(cfg.train_data()), "heads_total": n_layers * n_heads,
                  "compensation": str(comp_file)}
        if comp_file.is_file() and train_file.is_file():
            log.info("restorelcc: reusing the learned compensation %s", comp_file)
            stored = json.loads(train_file.read_text())
            report.update(stored, reused_compensation=True)
            report["folded_bias_params"] = fold_into_o_proj(model, _load_comps(comp_file))
        else:
            stored, (ids, runtime) = self._learn(model, tokenizer, run, resolve(run).prune_id, workdir, comp_file)
            stored["folded_bias_params"] = fold_into_o_proj(model, _load_comps(comp_file))
            with torch.no_grad():
                folded = model(input_ids=ids).logits.double()
            stored["fold_rel_diff"] = float((folded - runtime).norm() / runtime.norm())
            train_file.write_text(json.dumps(stored, indent=1))
            report.update(stored, reused_compensation=False)
        if cfg.save_model:
            save_folded(model, tokenizer, workdir / "model")
            report["saved_model"] = str(workdir / "model")
        return report

    def _learn(self, model, tokenizer, run, prune_id: str, workdir: Path, comp_file: Path) -> tuple:
        cfg = self.cfg
        data = cfg.train_data()
        rows = list(load_rows(data))
        n_heads = head_shape(model.config)[0]
        live = live_heads(model, n_heads)
        selected, dirs, how = choose_heads(model, tokenizer, rows, cfg, run, Path(run.paths.results), prune_id, live)
        by_layer: dict[int, list[int]] = {}
        for flat in sorted(selected):
            by_layer.setdefault(flat // n_heads, []).append(flat % n_heads)
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(cfg.training.seed)
        comps = {i: HeadCompensation(hs, None if dirs is None else dirs[i, hs], n_heads, cfg.init_std, g,
                                     cfg.compensation, head_shape(model.config)[1]).to(device)
                 for i, hs in by_layer.items()}
        out = {**how, "heads_live": int(live.sum()), "heads_selected": len(selected),
               "selected": [[f // n_heads, f % n_heads] for f in sorted(selected)]}
        frozen = {p: p.requires_grad for p in model.parameters()}
        for p in frozen:
            p.requires_grad_(False)
        train, val = load_instruction_data(data, tokenizer)
        if len(train) == 0:
            raise ConfigError("recovery.data.max_length", cfg.data.max_length,
                              "enough tokens for a prompt and part of its response (every row was truncated away)")
        check_ids = torch.tensor([train[0]["input_ids"][:16]], device=device)
        try:
            with compensate(model, comps):
                out["trainable_params"] = sum(p.numel() for m in comps.values() for p in m.parameters())
                out["training"] = fine_tune(model, tokenizer, train, val, cfg.training, workdir, desc="restorelcc")
                model.eval()
                with torch.no_grad():
                    runtime = model(input_ids=check_ids).logits.double()
        finally:
            for p, flag in frozen.items():
                p.requires_grad_(flag)
        _save_comps(comp_file, comps)
        return out, (check_ids, runtime)
