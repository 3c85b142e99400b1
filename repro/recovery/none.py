"""No recovery: the pruned model is evaluated as it is."""
from dataclasses import dataclass

from repro.methods.base import MethodConfig
from repro.recovery.base import Recovery
from repro.registry import register


@dataclass
class NoRecoveryConfig(MethodConfig):
    name: str = "none"


@register("recovery", "none", NoRecoveryConfig)
class NoRecovery(Recovery):
    def check(self, run) -> None:
        pass

    def recover(self, model, tokenizer, run, calib, workdir=None) -> dict:
        return {}
