"""Masked LoRA: a LoRA whose update never touches a pruned weight (LoSA Eq. 1; wzhuang-xmu/LoSA
peft/tuners/lora/layer.py:268-357, a vendored peft 0.8.1).

    y = W x + s · x (M ⊙ B[:, :r] A[:r, :])ᵀ,   M = 1[W ≠ 0] recomputed from the *live* base weight,   s = α / r_adapter

The mask multiplies the delta in the forward, in `merge`, in `unmerge` and in `merge_and_unload`, so a merged model
keeps exactly the zeros of its base weights: merge adds M ⊙ Δ (0 + 0 stays 0), unmerge subtracts M′ ⊙ Δ with M′
taken from the merged weight. `active_rank` (LoSA's `iter_rank`) slices the first r rows of A and columns of B; it
is an attribute of each layer, None = the adapter's full rank, and ranks above the adapter's are no-ops (the
reference's cap, research note §3 fact 1).

Built on peft's extension point for custom LoRA layers (`LoraConfig._register_custom_module`): `MaskedLoraLinear`
subclasses peft's `lora.Linear` and overrides `get_delta_weight` (which peft's merge / unmerge /
merge_and_unload call) and `forward`. No fork of peft. The product B·A is materialised under
`torch.utils.checkpoint` while training, as in the reference, so its d_out×d_in buffer is not kept for backward.

    config = masked_lora_config(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=[...])
    peft_model = peft.get_peft_model(model, config)
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear
from peft.utils.other import transpose
from torch.utils.checkpoint import checkpoint


def _masked_product(a: torch.Tensor, b: torch.Tensor, base: torch.Tensor, scaling: float) -> torch.Tensor:
    return (b @ a) * (base != 0) * scaling


def _masked_term(x, a, b, base, scaling):
    return x @ _masked_product(a, b, base, scaling).t()


class MaskedLoraLinear(LoraLinear):
    """peft `lora.Linear` with the mask M = 1[W ≠ 0] on every path and an optional active rank."""

    active_rank: Optional[int] = None

    def _slices(self, adapter: str):
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        r = self.active_rank
        if r is not None:
            a, b = a[:r], b[:, :r]
        return a, b

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        a, b = self._slices(adapter)
        base = self.get_base_layer().weight
        low = a.device.type == "cpu" and a.dtype in (torch.float16, torch.bfloat16)
        if low:
            a, b = a.float(), b.float()
        delta = transpose(_masked_product(a, b, transpose(base, self.fan_in_fan_out), self.scaling[adapter]),
                          self.fan_in_fan_out)
        return delta.to(base.dtype) if low else delta

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        active = [a for a in self.active_adapters if a in self.lora_A]
        if self.disable_adapters or self.merged or not active or kwargs.get("adapter_names") is not None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        out_dtype = result.dtype
        base = transpose(self.get_base_layer().weight, self.fan_in_fan_out).detach()
        for adapter in active:
            a, b = self._slices(adapter)
            xd = self.lora_dropout[adapter](self._cast_input_dtype(x, a.dtype))
            scaling = self.scaling[adapter]
            if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
                term = checkpoint(_masked_term, xd, a, b, base, scaling, use_reentrant=False)
            else:
                term = _masked_term(xd, a, b, base, scaling)
            result = result + term.to(out_dtype)
        return result.to(out_dtype)

    def __repr__(self) -> str:
        return "masked_" + super().__repr__()


def masked_lora_config(**kwargs) -> LoraConfig:
    """A `LoraConfig` whose nn.Linear targets become `MaskedLoraLinear`."""
    config = LoraConfig(**kwargs)
    config._register_custom_module({nn.Linear: MaskedLoraLinear})
    return config


def masked_layers(model: nn.Module):
    """(name, MaskedLoraLinear) pairs in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MaskedLoraLinear)]
