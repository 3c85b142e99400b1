"""Architecture adapters: where a causal LM keeps its decoder blocks and which linears a block prunes.

One small table per family instead of `if "opt" in name` branches scattered through the methods. The order of
`linear_names` is the module-registration order the references iterate in (`find_layers`), e.g. OPT lists
k, v, q before out_proj. `sequential_groups` are SparseGPT's `--true-sequential` groups. `downstream` maps each
linear to the linear whose *input channels* its output rows feed (NeuronAL's row step); `None` = no mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch.nn as nn


@dataclass(frozen=True)
class ArchAdapter:
    family: str
    model_types: tuple
    blocks_path: str                               # attribute path from the CausalLM to the ModuleList of blocks
    linear_names: tuple                            # relative names inside one block, in reference order
    sequential_groups: tuple                       # true-sequential pruning groups
    downstream: Dict[str, Optional[str]] = field(default_factory=dict)
    structured: Optional["StructuredLayout"] = None  # structured pruning's coupled linears (None: unsupported)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        obj = model
        for part in self.blocks_path.split("."):
            obj = getattr(obj, part)
        return obj

    def block_prefix(self, index: int) -> str:
        return f"{self.blocks_path}.{index}"

    def linears(self, block: nn.Module) -> Dict[str, nn.Linear]:
        """The prunable linears of one block, keyed by their name relative to the block, in reference order."""
        # a peft-wrapped linear (lora.Linear) exposes its nn.Linear as `<name>.base_layer`: that is the one pruned
        found = {n.removesuffix(".base_layer"): m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        missing = [n for n in self.linear_names if n not in found]
        if missing:
            raise KeyError(f"{self.family} adapter expects linears {missing} in the decoder block but found "
                           f"{sorted(found)}; the checkpoint's architecture differs from the adapter's.")
        return {n: found[n] for n in self.linear_names}

    def all_linears(self, model: nn.Module) -> Dict[str, nn.Linear]:
        """Every prunable linear of the model, keyed by its full module name."""
        out = {}
        for i, block in enumerate(self.blocks(model)):
            for n, m in self.linears(block).items():
                out[f"{self.block_prefix(i)}.{n}"] = m
        return out


@dataclass(frozen=True)
class StructuredLayout:
    """Which linears move together when a structure is removed (SlimGPT, repro/methods/slimgpt.py).

    `attn_out` is pruned by input-column groups (one group = one key/value head and the query heads that share it,
    `head_dim · heads/kv_heads` columns); the output rows of `attn_in` for those heads go with it (q: the group's
    query heads, k/v: its key/value head). `mlp_out` is pruned by single input columns; the same output rows of
    `mlp_in` go with them. `heads_attr`/`kv_heads_attr`/`head_dim_attr` name the config fields.
    """
    attn_out: str
    attn_q: str
    attn_kv: tuple
    mlp_out: str
    mlp_in: tuple
    heads_attr: str = "num_attention_heads"
    kv_heads_attr: str = "num_key_value_heads"

    def head_dim(self, config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // getattr(config, self.heads_attr)

    def heads(self, config) -> tuple:
        """(query heads, key/value heads) of the (uniform) config."""
        h = getattr(config, self.heads_attr)
        return h, getattr(config, self.kv_heads_attr, None) or h


_LLAMA_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

ADAPTERS: Dict[str, ArchAdapter] = {}


def _register(a: ArchAdapter) -> None:
    ADAPTERS[a.family] = a


_register(ArchAdapter(
    family="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks_path="model.layers",
    linear_names=_LLAMA_LINEARS,
    sequential_groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                       ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",)),
    downstream={"self_attn.q_proj": "self_attn.o_proj", "self_attn.k_proj": "self_attn.o_proj",
                "self_attn.v_proj": "self_attn.o_proj", "self_attn.o_proj": "mlp.gate_proj",
                "mlp.gate_proj": "mlp.down_proj", "mlp.up_proj": "mlp.down_proj",
                "mlp.down_proj": "next:self_attn.q_proj"},
    structured=StructuredLayout(attn_out="self_attn.o_proj", attn_q="self_attn.q_proj",
                                attn_kv=("self_attn.k_proj", "self_attn.v_proj"),
                                mlp_out="mlp.down_proj", mlp_in=("mlp.gate_proj", "mlp.up_proj")),
))
_register(ArchAdapter(
    family="opt",
    model_types=("opt",),
    blocks_path="model.decoder.layers",
    linear_names=("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "fc1", "fc2"),
    sequential_groups=(("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"), ("self_attn.out_proj",),
                       ("fc1",), ("fc2",)),
    # NeuronAL's OPT/Phi row mapping (NeuroAL lib/neuroal.py:33-68, get_distribution_row): each linear takes the
    # next linear's input in `find_layers` order; k/v/q take out_proj's, fc2 takes the next block's first (k_proj).
    downstream={"self_attn.k_proj": "self_attn.out_proj", "self_attn.v_proj": "self_attn.out_proj",
                "self_attn.q_proj": "self_attn.out_proj", "self_attn.out_proj": "fc1", "fc1": "fc2",
                "fc2": "next:self_attn.k_proj"},
))
_register(ArchAdapter(
    family="phi",
    model_types=("phi",),
    blocks_path="model.layers",
    linear_names=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2"),
    sequential_groups=(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.dense",),
                       ("mlp.fc1",), ("mlp.fc2",)),
    # NeuronAL's sequential mapping, kept although Phi's attention and MLP run in parallel (dense does not feed fc1).
    downstream={"self_attn.q_proj": "self_attn.dense", "self_attn.k_proj": "self_attn.dense",
                "self_attn.v_proj": "self_attn.dense", "self_attn.dense": "mlp.fc1", "mlp.fc1": "mlp.fc2",
                "mlp.fc2": "next:self_attn.q_proj"},
))


def supported_model_types() -> List[str]:
    return sorted(t for a in ADAPTERS.values() for t in a.model_types)


def adapter_for_model_type(model_type: str) -> ArchAdapter:
    for a in ADAPTERS.values():
        if model_type in a.model_types:
            return a
    raise ValueError(f"Unsupported architecture: model_type={model_type!r}. repro knows the decoder layout of "
                     f"{', '.join(supported_model_types())}. Add an ArchAdapter in repro/models/adapter.py "
                     f"(where the blocks are, the names of their linears) to support it.")


def adapter_for(model: nn.Module) -> ArchAdapter:
    return adapter_for_model_type(getattr(model.config, "model_type", "?"))
