"""Architecture adapters: where a causal LM keeps its decoder blocks and which linears a block prunes.

One small table per family instead of `if "opt" in name` branches scattered through the methods. The order of
`linear_names` is the module-registration order the references iterate in (`find_layers`), e.g. OPT lists
k, v, q before out_proj. `sequential_groups` are SparseGPT's `--true-sequential` groups. `downstream` maps each
linear to the linear whose *input channels* its output rows feed (NeuronAL's row step); `None` = no mapping.
`row_step_uniform` holds per-model-type quirks of that row step (the reference keeps Mistral's q/k/v uniform).

The blocks are the `nn.ModuleList` of the class the model names in `_no_split_modules` (transformers' own
declaration of its decoder layer, e.g. `["LlamaDecoderLayer"]`), so a model that nests its language model deeper
(a wrapper, a multimodal model) is found too; `blocks_path` names that list when it is there (stable module
names) and is the fallback for a model that declares no block class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import torch.nn as nn


@dataclass(frozen=True)
class ArchAdapter:
    family: str
    model_types: tuple
    blocks_path: str                               # attribute path from the CausalLM to the ModuleList of blocks
                                                   # (its name when found there; the fallback without _no_split_modules)
    linear_names: tuple                            # relative names inside one block, in reference order
    sequential_groups: tuple                       # true-sequential pruning groups
    downstream: Dict[str, Optional[str]] = field(default_factory=dict)
    structured: Optional["StructuredLayout"] = None  # structured pruning's coupled linears (None: unsupported)
    row_step_uniform: Dict[str, tuple] = field(default_factory=dict)   # model_type -> linears whose rows NeuronAL's
                                                                       # row step keeps uniform
    attn_out: str = ""                             # the attention output projection, relative to a block
    out_bias_flags: Dict[str, tuple] = field(default_factory=dict)     # model_type -> (config flag, linears it
                                                                       # gives a bias, attn_out among them)

    def blocks_with_path(self, model: nn.Module) -> Tuple[str, nn.ModuleList]:
        """(module path, list) of the decoder blocks: the ModuleList of the model's `_no_split_modules` class
        (named `blocks_path` when it is that one), else the list at `blocks_path`."""
        declared = _resolve(model, self.blocks_path)
        classes = set(getattr(model, "_no_split_modules", None) or ())
        if classes:
            found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)
                     and all(type(b).__name__ in classes for b in m)]
            for name, m in found:
                if m is declared:
                    return self.blocks_path, m
            if found:
                return found[0]
        if isinstance(declared, nn.ModuleList):
            return self.blocks_path, declared
        raise ValueError(f"{type(model).__name__}: no decoder blocks found — no nn.ModuleList of its "
                         f"_no_split_modules classes {sorted(classes) or '(none declared)'} and no "
                         f"`{self.blocks_path}` (the {self.family} adapter's path). Set ArchAdapter.blocks_path in "
                         f"repro/models/adapter.py to where this architecture keeps its decoder layers.")

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return self.blocks_with_path(model)[1]

    def block_prefix(self, index: int, model: Optional[nn.Module] = None) -> str:
        """The module name of block `index` in `model` (without a model: under the family's `blocks_path`)."""
        return f"{self.blocks_with_path(model)[0] if model is not None else self.blocks_path}.{index}"

    def block_targets(self, model: nn.Module, per_block: List) -> Dict[str, object]:
        """{full linear name: per_block[i]} for every prunable linear of block i (a block-wise allocation)."""
        path, blocks = self.blocks_with_path(model)
        return {f"{path}.{i}.{rel}": per_block[i] for i, block in enumerate(blocks) for rel in self.linears(block)}

    def uniform_rows(self, model: nn.Module) -> tuple:
        """Relative names of the linears whose rows NeuronAL's row step leaves uniform in this model."""
        return self.row_step_uniform.get(getattr(model.config, "model_type", ""), ())

    def linears(self, block: nn.Module) -> Dict[str, nn.Linear]:
        """The prunable linears of one block, keyed by their name relative to the block, in reference order."""
        # a peft-wrapped linear (lora.Linear) exposes its nn.Linear as `<name>.base_layer`: that is the one pruned
        found = {n.removesuffix(".base_layer"): m for n, m in block.named_modules() if isinstance(m, nn.Linear)}
        missing = [n for n in self.linear_names if n not in found]
        if missing:
            raise KeyError(f"{self.family} adapter expects linears {missing} in the decoder block but found "
                           f"{sorted(found)}; the checkpoint's architecture differs from the adapter's.")
        return {n: found[n] for n in self.linear_names}

    def attention_outputs(self, model: nn.Module) -> List[nn.Linear]:
        """Every block's attention output projection (`attn_out`), in block order."""
        out = [_resolve(b, self.attn_out) for b in self.blocks(model)] if self.attn_out else [None]
        if any(not isinstance(o, nn.Linear) for o in out):
            raise KeyError(f"{self.family} adapter: no attention output projection `{self.attn_out or '(unset)'}` "
                           f"in the decoder blocks; set ArchAdapter.attn_out in repro/models/adapter.py.")
        return out

    @staticmethod
    def head_shape(config) -> Tuple[int, int]:
        """(attention heads, head dimension) of an HF config (object or dict)."""
        return _field(config, "num_attention_heads"), head_dim(config)

    def out_bias_flag(self, model_type: str) -> Optional[tuple]:
        """(config flag, relative linears it gives a bias) that lets a checkpoint of `model_type` store an `attn_out`
        bias; None when transformers' modelling code has no such flag."""
        return self.out_bias_flags.get(model_type)

    def all_linears(self, model: nn.Module) -> Dict[str, nn.Linear]:
        """Every prunable linear of the model, keyed by its full module name."""
        path, blocks = self.blocks_with_path(model)
        out = {}
        for i, block in enumerate(blocks):
            for n, m in self.linears(block).items():
                out[f"{path}.{i}.{n}"] = m
        return out


def _field(config, name: str):
    return config.get(name) if isinstance(config, dict) else getattr(config, name, None)


def head_dim(config: Union[dict, object], heads_attr: str = "num_attention_heads") -> int:
    """The attention head dimension of an HF config (object or dict): `head_dim`, else hidden_size / heads."""
    return _field(config, "head_dim") or _field(config, "hidden_size") // _field(config, heads_attr)


def _resolve(obj, dotted: str):
    """The attribute at a dotted path, or None where a part is missing."""
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


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
        return head_dim(config, self.heads_attr)

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
    # NeuroAL lib/neuroal.py get_distribution_row keeps q/k/v uniform for Mistral only (GQA k/v elsewhere: the row
    # step keeps any linear uniform whose rows differ from the downstream input width)
    row_step_uniform={"mistral": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")},
    attn_out="self_attn.o_proj",
    # LlamaAttention: q/k/v/o all take bias=config.attention_bias; MistralAttention's are bias=False, no flag
    out_bias_flags={"llama": ("attention_bias", _LLAMA_LINEARS[:4])},
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
    attn_out="self_attn.out_proj",
    # OPTAttention k/v/q/out_proj and the decoder layer's fc1/fc2 take bias=config.enable_bias (default True)
    out_bias_flags={"opt": ("enable_bias", ("self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                                            "self_attn.out_proj", "fc1", "fc2"))},
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
    attn_out="self_attn.dense",
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
    try:
        return adapter_for_model_type(getattr(model.config, "model_type", "?"))
    except ValueError as e:
        blocks = getattr(model, "_no_split_modules", None)
        raise ValueError(f"{e} Its decoder layer class (_no_split_modules): {blocks or 'not declared'}.") from None
