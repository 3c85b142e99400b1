"""No recovery: the pruned model is evaluated as it is."""
from dataclasses import dataclass

from repro.methods.base import MethodConfig
from repro.registry import register


@dataclass
class NoRecoveryConfig(MethodConfig):
    name: str = "none"


@register("recovery", "none", NoRecoveryConfig)
class NoRecovery:
    def __init__(self, cfg):
        self.cfg = cfg

    def recover(self, model, tokenizer, run, calib) -> dict:
        return {}
