"""Per-head access shared by RestoreLCC (restorelcc.py, lcc_probe.py, lcc_select.py) and LoFiT (lofit.py).

Both edit each attention head's slice of the input of the attention output projection (LLaMA/Mistral
`self_attn.o_proj`, OPT `self_attn.out_proj`; called "o_proj" here as in the papers) and export a constant edit as a
bias of that projection, b_o += W_O · concat_h(c_h). Blocks, projections and the head shape come from the
architecture adapter (repro/models/adapter.py: `attention_outputs`, `head_shape`, `out_bias_flag`).

- `ARCHS`, `check_arch(model_type, save_model)`: the model types these methods run on (tested: LLaMA, Mistral, OPT),
  and whether a folded model can be saved: a checkpoint stores an o_proj bias only where transformers has a config
  flag for it (LLaMA `attention_bias`, which also gives q/k/v zero biases; OPT `enable_bias`, on by default, so the
  fold adds to the existing bias). Mistral has none: MistralAttention's o_proj is always bias-free, so a saved model
  would silently lose the compensation; `recovery.save_model=true` is a ConfigError there (in-process evaluation of
  the folded model works for all three: the bias is a parameter of the nn.Linear).
- `o_proj_pre_hooks(model, fn)`: fn(layer, args) as a forward pre-hook on every block's o_proj, owned by a HookSet
  (repro/prune/engine.py), removed when the `with` block is left, also on an exception.
- `o_proj_edits(model, modules, name, edit)`: each {layer: module} attached as `o_proj.<name>` (so its parameters are
  the model's while it trains) and x ← edit(module, x) applied to that layer's o_proj input; both always undone.
- `add_to_bias(linear, b)`: bias += b (created when absent), summed in float64, rounded once to the weight's dtype.
- `save_folded(model, tokenizer, out)`: sets the flag (zero biases for the linears it adds) and saves, so plain
  `AutoModelForCausalLM.from_pretrained(out)` loads the folded model exactly.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import nn

from repro.config import ConfigError

ARCHS = ("llama", "mistral", "opt")


def check_arch(model_type: str, method: str, save_model: bool = False) -> None:
    """ConfigError unless `method` runs on `model_type` (and, with save_model, a checkpoint can hold the fold)."""
    from repro.models.adapter import adapter_for_model_type

    if model_type not in ARCHS:
        raise ConfigError("recovery.name", method, f"a model of type {', '.join(ARCHS)} (this one is "
                          f"{model_type!r}): the per-head o_proj edit and its bias fold are tested on these only")
    if save_model and adapter_for_model_type(model_type).out_bias_flag(model_type) is None:
        import transformers
        raise ConfigError("recovery.save_model", save_model, f"false for model_type {model_type!r}", "Its attention "
                          f"output projection has no bias and no config flag for one in transformers "
                          f"{transformers.__version__}, so a saved checkpoint would silently lose the folded "
                          f"compensation; the in-process evaluation of the run uses it.")


def attention_outputs(model) -> list:
    from repro.models.adapter import adapter_for

    return adapter_for(model).attention_outputs(model)


def head_shape(config) -> tuple[int, int]:
    """(heads, head_dim) of the model's config."""
    from repro.models.adapter import ArchAdapter

    return ArchAdapter.head_shape(config)


@contextmanager
def o_proj_pre_hooks(model, hook_fn):
    """Register hook_fn(layer_idx, inputs) as a forward pre-hook on every block's o_proj; always removed."""
    from repro.prune.engine import HookSet

    with HookSet() as hooks:
        for i, o_proj in enumerate(attention_outputs(model)):
            hooks.add_pre(o_proj, lambda mod, args, i=i: hook_fn(i, args))
        yield


@contextmanager
def o_proj_edits(model, modules: dict, name: str, edit):
    """Attach `modules` ({layer: nn.Module}) as `o_proj.<name>` and replace each such layer's o_proj input x by
    edit(module, x); the hooks and submodules are removed on exit, also on an exception."""
    o_projs = attention_outputs(model)

    def hook(i, args):
        if i in modules:
            return (edit(modules[i], args[0]),) + tuple(args[1:])
    with ExitStack() as undo:
        for i, m in modules.items():
            o_projs[i].add_module(name, m)
            undo.callback(o_projs[i]._modules.pop, name)
        with o_proj_pre_hooks(model, hook):
            yield


@torch.no_grad()
def add_to_bias(linear: nn.Linear, b: torch.Tensor) -> None:
    """linear.bias += b (a new frozen bias when it has none), in float64, rounded once to the weight's dtype."""
    total = b.double().to(linear.weight.device)
    if linear.bias is not None:
        total = total + linear.bias.double()
    linear.bias = nn.Parameter(total.to(linear.weight.dtype), requires_grad=False)


@torch.no_grad()
def save_folded(model, tokenizer, out: Path) -> None:
    """Save a folded model so that plain transformers loads it: the o_proj bias flag on, zero biases where it adds
    them (LLaMA: q/k/v; OPT with enable_bias=false: every linear of the block)."""
    from repro.models.adapter import adapter_for

    adapter, model_type = adapter_for(model), model.config.model_type
    check_arch(model_type, "save_folded", save_model=True)
    flag, linears = adapter.out_bias_flag(model_type)
    for block in adapter.blocks(model):
        for rel, lin in adapter.linears(block).items():
            if rel in linears and lin.bias is None:
                lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype,
                                                    device=lin.weight.device), requires_grad=False)
    setattr(model.config, flag, True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
