"""Structured pruning's bookkeeping: which heads / channels a block still has, and the physically smaller model.

A structured method (SlimGPT, repro/methods/slimgpt.py) zeroes whole input-column groups of the attention output
projection and whole input columns of the MLP output projection; `zero_coupled_rows` then zeroes the output rows
of the linears that feed them (q/k/v, gate/up; `ArchAdapter.structured` names them). The zeroed model keeps its
shapes, so transformers, the run store (repro/store.py: masks + changed weights) and every evaluation and
recovery accept it unchanged, and it computes exactly what the smaller model computes.

`slim_model` removes the zeroed structures for real (per-layer head counts and intermediate sizes; the same rule
as SlimGPT's `LLaMAParamsPruner.remove_params`: a column is kept when it has a non-zero entry). transformers'
LLaMA attention reads its head count from the q/k/v output width (`view(..., -1, head_dim)`) and its GQA factor
from the module, so the smaller modules run with the stock code. `save_slim` / `load_slim` write and read such a
model: the config stays the dense one plus `layer_head_num` / `layer_kv_head_num` / `layer_inter_size` (SlimGPT's
own field names for the first and last), so `AutoModelForCausalLM.from_pretrained` alone cannot load it (its
LLaMA config has one head count and one intermediate size for all layers); `load_slim` builds the dense
skeleton from the config, shrinks each linear to the stored shape and loads the weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn

SLIM_FIELDS = ("layer_head_num", "layer_kv_head_num", "layer_inter_size")


def attention_group_size(layout, config) -> tuple:
    """(columns per pruning group of the attention output, query heads per group): one key/value head's group."""
    heads, kv_heads = layout.heads(config)
    rep = heads // kv_heads
    return layout.head_dim(config) * rep, rep


def kept_columns(weight: torch.Tensor, group: int = 1) -> torch.Tensor:
    """Bool per input-column group: True when any entry of the group is non-zero (SlimGPT's keep rule)."""
    nz = weight.detach().ne(0).any(dim=0)
    return nz.view(-1, group).any(dim=1)


def _row_mask(keep_groups: torch.Tensor, rows_per_group: int) -> torch.Tensor:
    return keep_groups.repeat_interleave(rows_per_group)


@torch.no_grad()
def zero_coupled_rows(linears: Dict[str, nn.Linear], layout, config, part: str) -> None:
    """Zero the feeding linears' output rows of the removed structures (`part`: "attn" or "mlp")."""
    if part == "attn":
        size, rep = attention_group_size(layout, config)
        keep = kept_columns(linears[layout.attn_out].weight, size)
        hd = layout.head_dim(config)
        linears[layout.attn_q].weight[~_row_mask(keep, hd * rep)] = 0
        for name in layout.attn_kv:
            linears[name].weight[~_row_mask(keep, hd)] = 0
    else:
        keep = kept_columns(linears[layout.mlp_out].weight)
        for name in layout.mlp_in:
            linears[name].weight[~keep] = 0


def structure_of(model, adapter) -> dict:
    """Per-layer query heads, key/value heads and intermediate channels that remain (from the zero pattern)."""
    layout, config = adapter.structured, model.config
    size, rep = attention_group_size(layout, config)
    heads, kv, inter = [], [], []
    for block in adapter.blocks(model):
        lin = adapter.linears(block)
        groups = int(kept_columns(lin[layout.attn_out].weight, size).sum())
        heads.append(groups * rep)
        kv.append(groups)
        inter.append(int(kept_columns(lin[layout.mlp_out].weight).sum()))
    return {"layer_head_num": heads, "layer_kv_head_num": kv, "layer_inter_size": inter}


def _shrink(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    w = linear.weight.data
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    new = nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.data[rows] if rows is not None else linear.bias.data)
    return new


def _set(block: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, leaf = dotted.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, leaf, module)


@torch.no_grad()
def slim_block(block: nn.Module, adapter, config) -> None:
    """Physically remove the block's zeroed heads (whole key/value groups) and intermediate channels."""
    layout = adapter.structured
    lin = adapter.linears(block)
    size, rep = attention_group_size(layout, config)
    hd = layout.head_dim(config)
    keep_g = kept_columns(lin[layout.attn_out].weight, size)
    q_rows = _row_mask(keep_g, hd * rep).to(lin[layout.attn_q].weight.device)
    kv_rows = _row_mask(keep_g, hd).to(q_rows.device)
    _set(block, layout.attn_q, _shrink(lin[layout.attn_q], rows=q_rows))
    for name in layout.attn_kv:
        _set(block, name, _shrink(lin[name], rows=kv_rows))
    _set(block, layout.attn_out, _shrink(lin[layout.attn_out], cols=q_rows))
    keep_c = kept_columns(lin[layout.mlp_out].weight).to(q_rows.device)
    for name in layout.mlp_in:
        _set(block, name, _shrink(lin[name], rows=keep_c))
    _set(block, layout.mlp_out, _shrink(lin[layout.mlp_out], cols=keep_c))
    attn = block.get_submodule(layout.attn_out.rpartition(".")[0])
    for attr, value in (("num_heads", int(keep_g.sum()) * rep), ("num_key_value_heads", int(keep_g.sum()))):
        if hasattr(attn, attr):                   # older transformers keep per-module counts: keep them true
            setattr(attn, attr, value)


def slim_model(model, adapter) -> dict:
    """Shrink every block in place; record the per-layer shapes in `model.config`; return them."""
    if adapter.structured is None:
        raise ValueError(f"structured pruning has no layout for the {adapter.family} family "
                         f"(ArchAdapter.structured in repro/models/adapter.py)")
    shapes = structure_of(model, adapter)
    for block in adapter.blocks(model):
        slim_block(block, adapter, model.config)
    for key, value in shapes.items():
        setattr(model.config, key, value)
    return shapes


def count_params(model, adapter=None) -> dict:
    """Parameters of the whole model and of the decoder blocks' linears (what structured pruning removes)."""
    total = sum(p.numel() for p in model.parameters())
    out = {"total": total}
    if adapter is not None:
        out["block_linears"] = sum(lin.weight.numel() + (lin.bias.numel() if lin.bias is not None else 0)
                                   for lin in adapter.all_linears(model).values())
    return out


def physical_counts(model, adapter) -> dict:
    """Parameter counts the zeroed model would have once its removed structures are cut (without cutting)."""
    layout, config = adapter.structured, model.config
    removed = 0
    for block in adapter.blocks(model):
        lin = adapter.linears(block)
        size, rep = attention_group_size(layout, config)
        hd = layout.head_dim(config)
        gone_g = int((~kept_columns(lin[layout.attn_out].weight, size)).sum())
        removed += gone_g * hd * rep * (lin[layout.attn_q].in_features + lin[layout.attn_out].out_features)
        removed += gone_g * hd * sum(lin[n].in_features for n in layout.attn_kv)
        for name in (layout.attn_q, *layout.attn_kv):
            if lin[name].bias is not None:
                removed += gone_g * hd * (rep if name == layout.attn_q else 1)
        gone_c = int((~kept_columns(lin[layout.mlp_out].weight)).sum())
        removed += gone_c * (sum(lin[n].in_features + (lin[n].bias is not None) for n in layout.mlp_in)
                             + lin[layout.mlp_out].out_features)
    before = count_params(model, adapter)
    return {"params_before": before["total"], "params_after": before["total"] - removed,
            "block_linear_params_before": before["block_linears"],
            "block_linear_params_after": before["block_linears"] - removed,
            **structure_of(model, adapter)}


def save_slim(model, path: str | Path) -> None:
    """`save_pretrained` of a slimmed model (config carries the per-layer shapes); reload with `load_slim`."""
    model.save_pretrained(str(path))


def load_slim(path: str | Path, adapter=None, **kwargs):
    """Build the dense skeleton from the saved config, shrink each linear to the stored shapes, load the weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from repro.models.adapter import adapter_for_model_type

    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    missing = [f for f in SLIM_FIELDS if getattr(config, f, None) is None]
    if missing:
        raise ValueError(f"{path} is not a slimmed checkpoint: its config lacks {missing}")
    adapter = adapter or adapter_for_model_type(config.model_type)
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    for i, block in enumerate(adapter.blocks(model)):
        for rel, lin in adapter.linears(block).items():
            w = state[f"{adapter.block_prefix(i)}.{rel}.weight"]
            _set(block, rel, nn.Linear(w.shape[1], w.shape[0], bias=lin.bias is not None, dtype=lin.weight.dtype))
    missing_keys, unexpected = model.load_state_dict(state, strict=False)
    missing_keys = [k for k in missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing_keys or unexpected:
        raise ValueError(f"{path}: missing weights {missing_keys[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    for block, heads, kv in zip(adapter.blocks(model), config.layer_head_num, config.layer_kv_head_num):
        attn = block.get_submodule(adapter.structured.attn_out.rpartition(".")[0])
        for attr, value in (("num_heads", heads), ("num_key_value_heads", kv)):
            if hasattr(attn, attr):
                setattr(attn, attr, value)
    return model.eval()


__all__ = ["zero_coupled_rows", "structure_of", "slim_model", "slim_block", "count_params", "physical_counts",
           "save_slim", "load_slim", "kept_columns", "attention_group_size"]
