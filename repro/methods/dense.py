"""The dense model: no pruning (every table's reference row)."""
from dataclasses import dataclass

from repro.methods.base import MethodConfig, Scorer
from repro.registry import register


@dataclass
class DenseConfig(MethodConfig):
    name: str = "dense"


@register("score", "dense", DenseConfig)
class Dense(Scorer):
    prunes = False
