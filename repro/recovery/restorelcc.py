"""RestoreLCC (recovery=restorelcc) — PARTIAL: activation capture only (reference zijian678/restorelcc).

`capture_head_inputs(model, input_ids, attention_mask)`: each attention head's slice of the o_proj INPUT at the last
prompt token (last non-padding position), per layer: {layer: tensor (n, n_heads, head_dim)}. Forward pre-hooks on
o_proj, owned by a context manager that removes them in `finally`.

Not built yet (see experiments/restorelcc/NOTES.md): head probing, compensation training, folding, the Recovery
class, its config and preflight. The math lives in repro/recovery/lcc_math.py.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def o_proj_pre_hooks(model, hook_fn):
    """Register hook_fn(layer_idx, inputs) as a forward pre-hook on every decoder layer's o_proj; always removed."""
    handles = []
    try:
        for i, layer in enumerate(model.model.layers):
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(
                lambda mod, args, i=i: hook_fn(i, args)))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_head_inputs(model, input_ids, attention_mask=None) -> dict[int, torch.Tensor]:
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    last = attention_mask.sum(1) - 1               # right padding: last real token
    rows = torch.arange(input_ids.shape[0])
    out: dict[int, torch.Tensor] = {}

    def grab(i, args):
        x = args[0][rows, last]                    # (n, n_heads*head_dim)
        out[i] = x.reshape(x.shape[0], -1, head_dim).detach().float().cpu()

    with o_proj_pre_hooks(model, grab):
        model(input_ids=input_ids, attention_mask=attention_mask)
    return out
