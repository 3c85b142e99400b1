"""ATP — layer-wise sparsity as an arithmetic progression over depth (Huang et al., ICML 2025).

Reference (read, not copied): wzhuang-xmu/ATP @ 56b8437 — main.py:58-66 (the progression and the legality
check), lib/prune.py (`sparsity_rates[i]` for every linear of block i), search.sh (the β search).
Sample config: `python -m repro.run env=offline allocation=atp score=wanda sparsity=0.7` (searches β);
`allocation.beta=0.01` fixes it.

Rule: for L blocks and target s, block l ∈ [0, L) gets s_l = s − β(L−1)/2 + l·β (mean exactly s, increasing
with depth: early blocks are denser). Legal β (reference): β ≤ min(2s, 2(1−s)) / (L−1).
Search (search.sh): β = step, 2·step, ... (step 0.002) while legal; each candidate prunes the model with the run's
scorer and pattern and measures WikiText-2 perplexity; the lowest wins (first on ties). The reference selects on
the WikiText-2 *test* perplexity it reports — we do the same by default (`search_dataset: wikitext2`, through
`data.wikitext2` and the evaluation settings `eval.ppl.seqlen/max_windows/batch_size`, so `env=offline` searches
on the bundled slice); `search_dataset: c4` or `ptb` select on another stream.

Deviations / choices:
- A candidate whose last block would reach sparsity 1 (β at the bound exactly) is skipped: the reference would
  prune that block entirely; a fixed `beta` outside the legal range raises a ConfigError (the reference prints
  "Illegal beta" and exits) — checked once the block count is known, before any weight changes.
- Between candidates the weights are restored from a CPU copy (the reference reloads the model per run).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from repro.allocation._ratio_maps import check_layer_ratios, first_argmin
from repro.config import ConfigError, check_choice, check_range
from repro.methods.base import AllocationContext, Allocator, MethodConfig
from repro.registry import register

log = logging.getLogger(__name__)


def atp_sparsities(nblocks: int, sparsity: float, beta: float) -> List[float]:
    """s_l = s − β(L−1)/2 + l·β for l = 0..L−1."""
    first = sparsity - beta * (nblocks - 1) / 2
    return [first + i * beta for i in range(nblocks)]


def beta_bound(nblocks: int, sparsity: float) -> float:
    """The largest legal step (reference main.py:64): min(2s, 2(1 − s)) / (L − 1)."""
    return min(2 * sparsity, 2 * (1 - sparsity)) / max(nblocks - 1, 1)


def beta_grid(nblocks: int, sparsity: float, step: float) -> List[float]:
    """search.sh: step, 2·step, ... up to the bound, without candidates that put a block at sparsity 1."""
    bound, out, k = beta_bound(nblocks, sparsity), [], 1
    while round(k * step, 12) <= bound + 1e-12:
        beta = round(k * step, 12)
        if all(0.0 <= s < 1.0 for s in atp_sparsities(nblocks, sparsity, beta)):
            out.append(beta)
        k += 1
    return out


@dataclass
class ATPConfig(MethodConfig):
    name: str = "atp"
    beta: Optional[float] = None         # common difference; None = search (search.sh)
    beta_step: float = 0.002             # search grid step (search.sh)
    search_dataset: str = "wikitext2"    # perplexity stream the search minimises (reference: WikiText-2 test)

    def __post_init__(self):
        if self.beta is not None:
            check_range("allocation.beta", self.beta, lo=0.0)
        check_range("allocation.beta_step", self.beta_step, lo=0.0, lo_open=True)
        check_choice("allocation.search_dataset", self.search_dataset, ("wikitext2", "c4", "ptb"))


@register("allocation", "atp", ATPConfig)
class ATP(Allocator):
    needs_calibration = False            # the search prunes with the scorer, which brings its own need

    def allocate(self, ctx: AllocationContext) -> Dict[str, float]:
        nblocks, s = len(ctx.adapter.blocks(ctx.model)), ctx.run.sparsity
        expected = f"a step β in [0, {beta_bound(nblocks, s):.6f}] for {nblocks} blocks at sparsity {s}"
        if self.cfg.beta is not None:
            beta, searched = self.cfg.beta, None
            if beta > beta_bound(nblocks, s) + 1e-12:
                raise ConfigError("allocation.beta", beta, expected, "(the reference prints 'Illegal beta')")
        else:
            beta, searched = self._search(ctx, nblocks, expected)
        per_block = atp_sparsities(nblocks, s, beta)
        check_layer_ratios("allocation.beta", beta, per_block, s, expected)
        ctx.report.update({"beta": beta, "block_sparsity": per_block, "search": searched})
        log.info("ATP β = %.4f, block sparsities %.3f .. %.3f", beta, per_block[0], per_block[-1])
        return ctx.adapter.block_targets(ctx.model, per_block)

    def _search(self, ctx: AllocationContext, nblocks: int, expected: str):
        from repro.data.perplexity import load_ppl_stream
        from repro.eval.perplexity import perplexity
        from repro.models.loading import model_seqlen
        from repro.prune.pipeline import ApplyTargets

        grid = beta_grid(nblocks, ctx.run.sparsity, self.cfg.beta_step)
        if not grid:
            raise ConfigError("allocation.beta_step", self.cfg.beta_step, expected,
                              "no search candidate: the step exceeds the largest legal β")
        ppl_cfg, name = ctx.run.eval.ppl, self.cfg.search_dataset
        seqlen = ppl_cfg.seqlen or model_seqlen(ctx.model, ctx.run.model)
        ids, _ = load_ppl_stream(name, getattr(ctx.run.data, name), ctx.tokenizer, seqlen)
        linears = ctx.adapter.all_linears(ctx.model)
        saved = {n: lin.weight.detach().to("cpu", copy=True) for n, lin in linears.items()}
        ppls = []
        try:
            for beta in grid:
                t0 = time.perf_counter()
                targets = ctx.adapter.block_targets(ctx.model, atp_sparsities(nblocks, ctx.run.sparsity, beta))
                ctx.run_pass(ApplyTargets(ctx.scorer, targets, ctx.run.pattern), propagate=None, true_sequential=None,
                             calibrated=ctx.scorer.needs_calibration, progress=False)    # as the run will prune
                value, _ = perplexity(ctx.model, ids, seqlen, ppl_cfg.batch_size, ppl_cfg.max_windows,
                                      desc=f"ATP β={beta:g}")
                ppls.append(value)
                log.info("ATP search: β = %.4f -> %s ppl %.4f (%.0f s)", beta, name, value, time.perf_counter() - t0)
                with torch.no_grad():
                    for n, lin in linears.items():
                        lin.weight.copy_(saved[n])
        finally:
            with torch.no_grad():
                for n, lin in linears.items():
                    lin.weight.copy_(saved[n])
        best = first_argmin(ppls)
        return grid[best], {"dataset": name, "betas": grid, "ppl": ppls}
