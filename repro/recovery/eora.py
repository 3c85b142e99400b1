"""EoRA: training-free eigenspace low-rank compensation of a pruned model (`recovery=eora`).

Paper: Liu et al., "EoRA: Training-free Compensation for Compressed LLM with Eigenspace Low-Rank Approximation"
(arXiv 2410.21271). Reference code: NVlabs/EoRA@11ff6c0 `EoRA/eora.py` (`llama_sequential_eigen`, defaults from its
argparse); ModelCloud/GPTQModel carries a port for quantised models. RestoreLCC's Table 1 uses it as a baseline on
Wanda 50% and SparseGPT 2:4 (its settings are not stated: the rank is the reference default unless overridden).

    repro run score=wanda sparsity=0.5 recovery=eora                     # rank 512 (NVlabs/EoRA --eigen_r)
    repro run model=smollm2-135m env=offline score=wanda sparsity=0.5 recovery=eora   # env=offline: rank 64

Per block, in order (the reference's layer-by-layer pass, here through the project's CalibrationEngine):
    the block holds its DENSE weights; its inputs are the previous *compensated* blocks' outputs
    C = (1/N) Σ xᵀx for every target linear's input (one forward of the dense block: all linears at once,
        as the reference's `sequential = [list(full.keys())]`)
    ΔW = W_dense − W_pruned;  (A, B) = eora_math.eora_factors(ΔW, C, rank)
    the block is re-forwarded with W_pruned + B A: those outputs feed the next block
Afterwards every linear holds exactly its pruned weights again and (A, B) become a peft LoRA adapter (r = rank,
α = rank, so scaling 1, no dropout) kept UNMERGED: merging would make the sparse weights dense (the reference merges
`comp_weight = compressed + B@A`; the effective weights are identical, the record's zero fractions say both).

Dense weights: reloaded from the model source (repro/recovery/_dense.py), since the run pruned its model in place.

Deviations: the covariance comes from the run's calibration set (`calib`, e.g. C4 128 × 2048) instead of the
reference's separate `--eigen_dataset wikitext2` with 256 sequences and seed + 1 (`nsamples` takes the first N);
calibration sequences go through a block `calib.batch_size` at a time and C is the plain mean Σ xᵀx / N (the
paper's C). The reference's hook is not a mean: it updates C ← C·n/(n+1) + XᵀX/n with n FIXED at eigen_nsamples,
so sequence k of N weighs (n/(n+1))^(N−1−k) (first ≈ e⁻¹ ≈ 0.37, last 1): an order-dependent weighting we do not
copy (tests/test_eora_golden.py shows it on the reference's own C; the projection itself matches bit for bit);
zero eigenvalues are lifted like negative ones (eora_math). Artifacts: `workdir/eora.safetensors` (A and B per
linear) and `eora.json`; an evaluation-only change reloads them instead of recomputing.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch

from repro.config import ConfigError, check_choice, check_range
from repro.methods.base import MethodConfig
from repro.prune.engine import BlockCallback, calibration_pass
from repro.recovery import eora_math as em
from repro.recovery._dense import (check_nsamples, dense_weights, known_config, linear_dims, load_artifacts,
                                   save_artifacts, swap_weights, target_linears)
from repro.recovery.base import Recovery, weight_zero_fractions
from repro.recovery.lora import LOSA_TARGETS, check_targets
from repro.registry import register

log = logging.getLogger(__name__)
FACTORS, META = "eora.safetensors", "eora.json"


@dataclass
class EoraConfig(MethodConfig):
    name: str = "eora"
    rank: int = 512                      # NVlabs/EoRA eora.py --eigen_r default
    method: str = "eigen"                # eigen (EoRA) | svd (plain SVD of ΔW: the reference's --lowrank_method svd)
    target_modules: list = field(default_factory=lambda: list(LOSA_TARGETS))   # every linear (find_layers(layer))
    nsamples: Optional[int] = None       # first N calibration sequences; None = all (reference: 256)
    damp: float = 0.0                    # NVlabs/EoRA: none; GPTQModel's port: 0.01 of mean(diag C)

    def __post_init__(self):
        check_range("recovery.rank", self.rank, lo=1)
        check_choice("recovery.method", self.method, ("eigen", "svd"))
        check_targets(self.target_modules)
        if self.nsamples is not None:
            check_range("recovery.nsamples", self.nsamples, lo=1)
        check_range("recovery.damp", self.damp, lo=0.0)


def check_rank(rank: int, dims: Dict[str, tuple], targets) -> None:
    """rank ≤ min(out, in) of every target linear (a larger rank is not a low-rank approximation)."""
    sizes = {t: dims[t] for t in targets if t in dims}
    if not sizes:
        return
    smallest = min(sizes, key=lambda t: min(sizes[t]))
    cap = min(sizes[smallest])
    if rank > cap:
        raise ConfigError("recovery.rank", rank, f"an integer in [1, {cap}] (the smallest target, {smallest}, is "
                          f"{sizes[smallest][0]}×{sizes[smallest][1]})")


class _Compensate(BlockCallback):
    stats = frozenset({"hessian"})

    def __init__(self, recovery, pruned, dense):
        self.r, self.pruned, self.dense = recovery, pruned, dense
        self.factors: Dict[str, tuple] = {}
        self.errors: Dict[str, dict] = {}

    @torch.no_grad()
    def on_group(self, ctx) -> None:
        cfg = self.r.cfg
        for rel, lin in ctx.linears.items():
            name = ctx.full_name(rel)
            if name not in self.pruned:                        # not a target
                continue
            w_p = self.pruned[name].to(lin.weight.device, torch.float32)
            delta = self.dense[name].to(lin.weight.device, torch.float32) - w_p
            st = ctx.stats[rel]
            cov = st["hessian"] * 0.5                          # (2/N) Σ xᵀx → the reference's (1/N) Σ xᵀx
            if cfg.method == "eigen":                          # q/k/v (gate/up) share one input: one eigh
                scaling = st.derived(("eora", cfg.damp), lambda s: em.eigen_scaling(s["hessian"] * 0.5, cfg.damp))
                a, b = em.eora_factors(delta, cov, cfg.rank, scaling=scaling)
            else:
                a, b = em.svd_factors(delta, cfg.rank)
            self.factors[name] = (a.cpu(), b.cpu())
            self.errors[name] = {"before": em.weighted_error(delta, cov),
                                 "after": em.weighted_error(delta - b @ a, cov)}
            lin.weight.copy_((w_p + b @ a).to(lin.weight.dtype))   # the compensated block feeds the next one

    @torch.no_grad()
    def after_block(self, ctx, outputs) -> None:
        for rel, lin in ctx.linears.items():
            if ctx.full_name(rel) in self.pruned:
                lin.weight.copy_(self.pruned[ctx.full_name(rel)].to(lin.weight.device, lin.weight.dtype))


@register("recovery", "eora", EoraConfig)
class Eora(Recovery):
    needs_calibration = True

    def check(self, run) -> None:
        super().check(run)
        config = known_config(run.model)
        if config is not None:
            check_rank(self.cfg.rank, linear_dims(config), self.cfg.target_modules)
        check_nsamples(self.cfg.nsamples, run)

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        cfg, workdir = self.cfg, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        adapter, linears = target_linears(model, cfg.target_modules)
        check_rank(cfg.rank, {n.split(".")[-1]: tuple(m.weight.shape) for n, m in linears.items()},
                   cfg.target_modules)
        stored = load_artifacts(workdir, FACTORS, META)
        if stored is not None:
            flat, report = stored
            factors = {n: (flat[f"{n}.A"], flat[f"{n}.B"]) for n in linears}
            report["reused_factors"] = True
        else:
            factors, report = self._compute(model, adapter, run, calib, linears)
            save_artifacts(workdir, FACTORS, META, {f"{n}.{k}": t for n, (a, b) in factors.items()
                                                    for k, t in (("A", a), ("B", b))}, report)
        self._attach(model, factors)
        report["zeros_unmerged"] = weight_zero_fractions(model)
        report["adapter_params"] = sum(a.numel() + b.numel() for a, b in factors.values())
        return report

    def _compute(self, model, adapter, run, calib, linears):
        cfg = self.cfg
        t0 = time.perf_counter()
        dense = dense_weights(run, linears)
        pruned = swap_weights(linears, dense)                  # the blocks hold dense weights until compensated
        load_s = time.perf_counter() - t0
        ids = calib.input_ids[:cfg.nsamples] if cfg.nsamples else calib.input_ids
        callback = _Compensate(self, pruned, dense)
        try:
            calibration_pass(model, adapter, run, callback, ids, true_sequential=False, propagate="pruned")
        finally:
            swap_weights(linears, pruned)                      # exactly the pruned weights, whatever happened
        before = sum(e["before"] for e in callback.errors.values())
        after = sum(e["after"] for e in callback.errors.values())
        report = {"method": "eora", "variant": cfg.method, "rank": cfg.rank, "sequences": int(ids.shape[0]),
                  "linears": len(callback.factors), "dense_reload_s": load_s,
                  "compute_s": time.perf_counter() - t0 - load_s,
                  "weighted_error_before": before, "weighted_error_after": after,
                  "weighted_error_ratio": after / before if before else None}
        log.info("eora: %d linears, rank %d, activation-weighted error %.4g -> %.4g", len(callback.factors),
                 cfg.rank, before, after)
        return callback.factors, report

    @torch.no_grad()
    def _attach(self, model, factors) -> None:
        """Wrap the target linears in a peft LoRA (r = α = rank: scaling 1, no dropout) holding B A, unmerged."""
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        cfg = self.cfg
        inject_adapter_in_model(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, lora_dropout=0.0, bias="none",
                                           target_modules=list(cfg.target_modules)), model)
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer) and name in factors:
                a, b = factors[name]
                module.lora_A["default"].weight.copy_(a)
                module.lora_B["default"].weight.copy_(b)
        model.requires_grad_(False)
