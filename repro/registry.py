"""Method registry: every scorer, allocator and recovery method registers its name and its config schema.

    @register("score", "wanda", WandaConfig)
    class Wanda(Scorer): ...

`validate_method_node` checks a config node (`score`, `allocation`, `recovery`) against the schema registered under
its `name` — an unknown name lists the valid ones, an unknown key or a wrong type names the field. Modules under
`repro.methods`, `repro.allocation` and `repro.recovery` are imported on first use, so adding a method is adding
one file (plus its `conf/<kind>/<name>.yaml`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
from typing import Any, Dict, Tuple

from omegaconf import OmegaConf

KINDS = ("score", "allocation", "recovery")
_PACKAGES = {"score": "repro.methods", "allocation": "repro.allocation", "recovery": "repro.recovery"}
_REGISTRY: Dict[str, Dict[str, Tuple[type, type]]] = {k: {} for k in KINDS}
_loaded = False


def register(kind: str, name: str, schema: type):
    def deco(cls):
        _REGISTRY[kind][name] = (cls, schema)
        return cls
    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in _PACKAGES.values():
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")


def names(kind: str) -> list:
    _load_all()
    return sorted(_REGISTRY[kind])


def validate_method_node(kind: str, node: Any):
    """Return the typed config (the registered schema's dataclass instance) for a `score`/`allocation`/... node."""
    from repro.config import ConfigError, _structured_merge

    _load_all()
    if dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict) or "name" not in node:
        raise ConfigError(kind, node, f"a mapping with a `name` (one of {', '.join(names(kind))})")
    name = node["name"]
    if name not in _REGISTRY[kind]:
        raise ConfigError(f"{kind}.name", name, "one of " + ", ".join(names(kind)))
    return _structured_merge(_REGISTRY[kind][name][1], node, kind)


def method_class(kind: str, name: str) -> type:
    """The class registered under `name` (its class attributes: `needs_calibration`, `prunes`, `check`, ...)."""
    _load_all()
    return _REGISTRY[kind][name][0]


def method_schema(kind: str, name: str) -> type:
    """The config dataclass registered under `name` (its fields are what a `kind` node may set)."""
    _load_all()
    return _REGISTRY[kind][name][1]


@contextlib.contextmanager
def registered(kind: str, name: str, cls: type, schema: type):
    """Register `cls` under `name` for the duration of a `with` block (tests' throw-away methods)."""
    _load_all()
    previous = _REGISTRY[kind].get(name)
    _REGISTRY[kind][name] = (cls, schema)
    try:
        yield cls
    finally:
        if previous is None:
            del _REGISTRY[kind][name]
        else:
            _REGISTRY[kind][name] = previous


def build(kind: str, cfg) -> Any:
    """Instantiate the implementation registered for a validated config."""
    _load_all()
    return _REGISTRY[kind][cfg.name][0](cfg)
