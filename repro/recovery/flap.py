"""FLAP's bias compensation of a pruned model (`recovery=flap`), as RestoreLCC's Table 1 uses FLAP.

FLAP (An et al., "Fluctuation-based Adaptive Structured Pruning for Large Language Models", AAAI 2024; reference
CASIA-IVA-Lab/FLAP@3bb57db lib/prune.py `prune_flap`, `compress`; lib/layerwrapper.py `BiasGPT`) is a structured
pruner with two parts: (1) which heads / FFN channels to remove (the fluctuation metric WIFV with adaptive global
structure), and (2) a retraining-free *bias compensation*: every removed input channel j of o_proj / down_proj is
replaced by its mean on the calibration set, i.e. the linear gains the bias

    b = Σ_{j removed} W[:, j] · x̄_j = W · (x̄ ⊙ 1[removed])     (`compress`: (attn_mean_inp * ~mask) @ W.T)

with x̄ the per-channel mean of the layer's input over every calibration token of the DENSE model (`BiasGPT
.baseline_inp`; the statistics pass runs each dense layer, the masks are applied after all layers).

What RestoreLCC's table runs: FLAP appears only in its SparseGPT 2:4 block, as a *recovery* of that 2:4 model
(row "SparseGPT 2:4 + FLAP" of experiments/restorelcc/tables.yaml), not as a pruner: the model is the SparseGPT 2:4
one and FLAP contributes its bias compensation (part 2). The paper's text on this row was not read here; this is
our reading of the table. We build exactly part 2, generalised from removed channels to any pruning error:

    b = (W_dense − W_pruned) · x̄        for o_proj and down_proj (FLAP compensates only these two)

For a structured removal (whole input columns zeroed, the others untouched) this is FLAP's formula term for term;
for 2:4 SparseGPT, ΔW also holds the OBS updates of the kept weights, and b makes the layer's mean output over the
calibration inputs equal the dense layer's: E[W_p x + b] = E[W_d x]. The weights keep exactly their zeros; the
bias is a new `bias` parameter of the linear (LLaMA's o_proj/down_proj have none).

FLAP's part 1 (WIFV, AL-AM structure search, physical removal) is not built: it would be a `score=` pruner of the
structured pattern (another helper builds `pattern=structured`).

Measured effect (experiments/restorelcc/NOTES.md "Why recovery=flap raises SmolLM2's perplexity"): on SmolLM2-135M
the bias HURTS (Wanda 50 %: ppl 81.35 → 83.65; SparseGPT 2:4: 129.54 → 135.11). A line-by-line comparison with
FLAP found no difference in code; experiments/restorelcc/flap_probe.py shows the first position is not the cause,
and that means taken on the test windows (82.35) or on the pruned model's own inputs (82.19) lose less but still
lose, and half the bias is neutral (81.34): FLAP's mean replacement is exact only for the nearly constant channels FLAP itself removes, which
Wanda/SparseGPT masks are not.

Deviations: x̄ comes from the run's calibration set (e.g. C4 128 × 2048; FLAP: WikiText-2 train, 1024 windows of 128
tokens in its scripts; `nsamples` takes the first N), in float64 with a float32 bias (FLAP: x̄ and bias in fp16), accumulated as sums (FLAP keeps a running mean: equal up to float
rounding). Dense weights are reloaded from the model source (repro/recovery/_dense.py). Artifacts:
`workdir/flap_bias.safetensors` + `flap.json`, reused by an evaluation-only change.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from repro.config import check_range
from repro.methods.base import MethodConfig
from repro.prune.engine import BlockCallback, calibration_pass
from repro.recovery._dense import (check_nsamples, dense_weights, load_artifacts, save_artifacts, swap_weights,
                                   target_linears)
from repro.recovery.base import Recovery
from repro.recovery.lora import check_targets
from repro.registry import register

log = logging.getLogger(__name__)
BIASES, META = "flap_bias.safetensors", "flap.json"


@dataclass
class FlapConfig(MethodConfig):
    name: str = "flap"
    target_modules: list = field(default_factory=lambda: ["o_proj", "down_proj"])   # FLAP lib/prune.py `compress`
    nsamples: Optional[int] = None       # first N calibration sequences; None = all (FLAP's scripts: 1024)

    def __post_init__(self):
        check_targets(self.target_modules)
        if self.nsamples is not None:
            check_range("recovery.nsamples", self.nsamples, lo=1)


def compensation_bias(dense: torch.Tensor, pruned: torch.Tensor, mean_input: torch.Tensor) -> torch.Tensor:
    """b = (W_dense − W_pruned) x̄, in float64."""
    return (dense.double() - pruned.double()) @ mean_input.double()


class _InputMeans(BlockCallback):
    """Collect each target linear's mean input (per token) while the blocks hold dense weights."""
    stats = frozenset({"sum"})

    def __init__(self, names, tokens_per_sequence: int):
        self.names, self.tokens, self.means = set(names), tokens_per_sequence, {}

    def on_group(self, ctx) -> None:
        for rel in ctx.linears:
            if ctx.full_name(rel) in self.names:
                self.means[ctx.full_name(rel)] = (ctx.stats[rel]["sum"] / self.tokens).cpu()


@register("recovery", "flap", FlapConfig)
class Flap(Recovery):
    needs_calibration = True

    def check(self, run) -> None:
        super().check(run)
        check_nsamples(self.cfg.nsamples, run)

    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        cfg, workdir = self.cfg, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        adapter, linears = target_linears(model, cfg.target_modules)
        stored = load_artifacts(workdir, BIASES, META)
        if stored is not None:
            biases, report = stored
            report["reused_biases"] = True
        else:
            biases, report = self._compute(model, adapter, run, calib, linears)
            save_artifacts(workdir, BIASES, META, biases, report)
        self._apply(linears, biases)
        return report

    def _compute(self, model, adapter, run, calib, linears):
        cfg = self.cfg
        t0 = time.perf_counter()
        # FLAP's statistics pass sees the dense model: every linear of every block dense, dense propagation
        everything = adapter.all_linears(model)
        dense = dense_weights(run, everything)
        pruned = swap_weights(everything, dense)
        ids = calib.input_ids[:cfg.nsamples] if cfg.nsamples else calib.input_ids
        callback = _InputMeans(linears, ids.shape[1])
        try:
            calibration_pass(model, adapter, run, callback, ids, true_sequential=False, propagate="dense")
        finally:
            swap_weights(everything, pruned)
        biases: Dict[str, torch.Tensor] = {}
        for n in linears:
            biases[n] = compensation_bias(dense[n], pruned[n], callback.means[n]).float().contiguous()
        report = {"method": "flap_bias_compensation", "linears": len(biases), "sequences": int(ids.shape[0]),
                  "bias_norm_mean": float(sum(b.norm() for b in biases.values()) / max(len(biases), 1)),
                  "compute_s": time.perf_counter() - t0}
        return biases, report

    @staticmethod
    @torch.no_grad()
    def _apply(linears, biases) -> None:
        for n, lin in linears.items():
            b = biases[n].to(lin.weight.device, torch.float32)
            if lin.bias is not None:
                b = b + lin.bias.float()
            lin.bias = nn.Parameter(b.to(lin.weight.dtype), requires_grad=False)
