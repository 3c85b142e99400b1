"""The recovery axis: what runs after pruning to win back quality (LoRA/DoRA, masked LoRA, LoSA, RestoreLCC).

Contract (every method in `repro/recovery/` subclasses `Recovery` and registers a schema):

- `needs_calibration`: the run loads the calibration set and passes it as `calib` (LoSA prunes and measures
  reconstruction error on it).
- `prunes_itself`: the method prunes during its own rounds (LoSA). The run then skips `prune_model` and hands the
  method the dense model; the model `recover` returns must be at the target sparsity.
- `slims_structured`: on a structured prune the run cuts the model to its physically smaller form before `recover`
  (repro/run_steps.py `slim_for_recovery`; the run and recover identities say so). LoRA/DoRA set it; methods that
  address heads by index on the uniform layout (RestoreLCC, LoFiT) work on the zeroed model, where a removed head
  contributes nothing.
- `check(run)`: preflight, before the model loads. Raise `ConfigError(field, value, expected)` for a bad rank, an
  unknown target module, recovery asked of a dense model, a dataset path that does not exist or lacks a field, a
  template without its response marker.
- `recover(model, tokenizer, run, calib, workdir) -> dict`: modifies `model` in place (it may wrap linears with
  adapters that stay unmerged) and returns the report stored in the record under `recovery`. `workdir` is a
  persistent directory owned by the recover stage: methods store what they learned there (adapter weights, merged
  sparse weights, LoSA round checkpoints) and reuse it, so an evaluation-only change does not fine-tune again and a
  killed LoSA run resumes from its last completed round.

`weight_zero_fractions(model)` measures, for the record, the fraction of exact zeros of the *base* weights and of
the *effective* weights (base + unmerged adapter delta) of every adapted linear: a dense LoRA on a sparse model is
not sparse, and the record must say so.
"""
from __future__ import annotations

from pathlib import Path

import torch

from repro.config import ConfigError
from repro.registry import method_class


class Recovery:
    needs_calibration = False
    prunes_itself = False
    slims_structured = False

    def __init__(self, cfg):
        self.cfg = cfg

    def check(self, run) -> None:
        """Preflight (no model loaded): raise ConfigError on bad input."""
        if not method_class("score", run.score.name).prunes and not self.prunes_itself:
            raise ConfigError("recovery.name", run.recovery.name, "recovery=none for a dense model (score=dense)",
                              "Recovery fine-tunes a pruned model; choose a pruning score (e.g. score=wanda).")

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        raise NotImplementedError


@torch.no_grad()
def weight_zero_fractions(model) -> dict:
    """Zero fractions of the linears that carry a peft adapter: base weights and effective weights.

    The effective weight of an unmerged adapter is base + delta (peft's `get_delta_weight`, masked for masked
    LoRA); a merged or absent adapter contributes nothing. Returns {} when the model has no adapter."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:           # pragma: no cover - peft is a dependency
        return {}
    base_zeros = eff_zeros = total = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        w = module.get_base_layer().weight
        eff = w.clone()
        if not module.merged and not module.disable_adapters:
            for name in module.active_adapters:
                if name in module.lora_A:
                    eff += _delta(module, name).to(eff.dtype)
        base_zeros += int((w == 0).sum())
        eff_zeros += int((eff == 0).sum())
        total += w.numel()
    if not total:
        return {}
    return {"base_zero_fraction": base_zeros / total, "effective_zero_fraction": eff_zeros / total,
            "adapted_params": total}


def _delta(module, name):
    variant = getattr(module, "lora_variant", {}).get(name)
    if variant is not None and hasattr(variant, "delta_weight"):
        return variant.delta_weight(module, name)
    if variant is not None:       # DoRA: effective weight = merge_safe of a copy
        w = module.get_base_layer().weight
        return variant.merge_safe(module, name, w.clone()) - w
    return module.get_delta_weight(name)


def apply_budget(node, budget):
    """Merge `budget` (env=offline's `recovery_budget`) into a recovery config node, keeping only the top-level keys
    that the chosen method's schema has: one env file sizes every recovery (few steps, short sequences, the offline
    stand-in data) without knowing which one runs. The merged values are part of the recovery node, hence of the
    run identity."""
    import dataclasses

    from omegaconf import OmegaConf

    from repro.registry import method_schema, names

    name = node.get("name") if node is not None else None
    if budget is None or name not in names("recovery"):
        return node
    fields = {f.name for f in dataclasses.fields(method_schema("recovery", name))}
    keep = {k: v for k, v in OmegaConf.to_container(budget, resolve=True).items() if k in fields}
    return OmegaConf.merge(node, keep) if keep else node
