"""Uniform allocation: every prunable linear gets the run's sparsity."""
from dataclasses import dataclass

from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.registry import register


@dataclass
class UniformConfig(MethodConfig):
    name: str = "uniform"


@register("allocation", "uniform", UniformConfig)
class Uniform(Allocator):
    def allocate(self, ctx: AllocationContext):
        return {name: ctx.run.sparsity for name in ctx.adapter.all_linears(ctx.model)}
