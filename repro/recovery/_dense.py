"""Helpers shared by the training-free compensations (EoRA, FLAP) and LoFiT's preflight.

- `known_config(model_cfg)` (from repro.models.loading): the model's HF config when known without loading weights.
  Preflight checks of ranks and head counts use it; when it is unknown the same check runs again after loading
  (`shape_of`).
- `dense_weights(run, names)`: the dense weights of the named linears (given as {name: module}, their shapes must
  match: a structurally pruned model has no per-weight error, a ConfigError). The run prunes its model in place (or loads
  a stored prune, repro/store.py), so the dense reference is reloaded from the model source (`load_model` with the
  run's seed: the same weights the prune started from) and only the requested linears are kept, on CPU. Cost: one
  extra model load, and the linears' dense weights in CPU memory.
- `swap_weights(linears, weights)`: copy `weights` into the linears and return their previous values (CPU).
- `save_tensors` / `save_artifacts` / `load_artifacts`: a recovery's stored tensors (safetensors, written atomically)
  and its JSON report (EoRA, FLAP; RestoreLCC's compensation file).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from repro.models.loading import known_config  # noqa: F401  (re-exported for eora/lofit)


def shape_of(config: dict) -> dict:
    """hidden, intermediate, layers, heads, kv_heads, head_dim of a LLaMA-style config dict (None where absent)."""
    from repro.models.adapter import head_dim as head_dim_of

    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head_dim = head_dim_of(config) if hidden and heads else config.get("head_dim")
    return {"hidden": hidden, "intermediate": config.get("intermediate_size"),
            "layers": config.get("num_hidden_layers"), "heads": heads,
            "kv_heads": config.get("num_key_value_heads") or heads, "head_dim": head_dim}


def linear_dims(config: dict) -> Dict[str, tuple]:
    """(out, in) of each LLaMA linear (short name) from a config dict; {} when the sizes are unknown."""
    s = shape_of(config)
    if not all(s[k] for k in ("hidden", "intermediate", "heads", "head_dim")):
        return {}
    q, kv, h, m = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"], s["hidden"], s["intermediate"]
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m)}


@torch.no_grad()
def dense_weights(run, names: Iterable[str]) -> Dict[str, torch.Tensor]:
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model

    dense, _ = load_model(run.model, seed=run.seed)
    linears = adapter_for(dense).all_linears(dense)
    out = {n: linears[n].weight.detach().to("cpu", copy=True) for n in names}
    del dense, linears
    if torch.cuda.is_available():
        torch.cuda.empty_cache()                 # the second model's GPU memory, before the engine pass
    for n, module in (names.items() if isinstance(names, dict) else ()):
        if tuple(module.weight.shape) != tuple(out[n].shape):
            from repro.config import ConfigError
            raise ConfigError("recovery.name", run.recovery.name, "a recovery that does not need W_dense − W_pruned",
                              f"{n} is {tuple(module.weight.shape)} here and {tuple(out[n].shape)} in the dense "
                              f"model: a structurally smaller model has no per-weight pruning error.")
    return out


@torch.no_grad()
def swap_weights(linears: Dict[str, torch.nn.Module], weights: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    old = {}
    for n, w in weights.items():
        lin = linears[n]
        old[n] = lin.weight.detach().to("cpu", copy=True)
        lin.weight.copy_(w.to(lin.weight.device, lin.weight.dtype))
    return old


def check_nsamples(nsamples: Optional[int], run) -> None:
    """`recovery.nsamples` (the first N calibration sequences) cannot exceed `calib.nsamples`."""
    from repro.config import ConfigError

    if nsamples is not None and nsamples > run.calib.nsamples:
        raise ConfigError("recovery.nsamples", nsamples, f"at most calib.nsamples = {run.calib.nsamples}")


def target_linears(model, targets) -> tuple:
    """(adapter, {full name: linear}) of the model's linears whose last name component is in `targets`."""
    from repro.models.adapter import adapter_for

    adapter = adapter_for(model)
    return adapter, {n: m for n, m in adapter.all_linears(model).items() if n.split(".")[-1] in targets}


def load_artifacts(workdir: Path, tensors_file: str, meta_file: str) -> Optional[tuple]:
    """(tensors, report) stored by `save_artifacts` in the recover stage's folder, or None when absent."""
    if not ((workdir / tensors_file).is_file() and (workdir / meta_file).is_file()):
        return None
    from safetensors.torch import load_file

    return load_file(str(workdir / tensors_file)), json.loads((workdir / meta_file).read_text())


def save_tensors(path: Path, tensors: dict) -> None:
    """Write `tensors` (detached, on CPU, contiguous) to the safetensors file `path` atomically (`<path>.tmp`, renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def save_artifacts(workdir: Path, tensors_file: str, meta_file: str, tensors: dict, report: dict) -> None:
    save_tensors(workdir / tensors_file, tensors)
    (workdir / meta_file).write_text(json.dumps(report, indent=1))
