"""LoSA: dynamic low-rank sparse adaptation (Huang et al., ICLR 2025; wzhuang-xmu/LoSA@51b4e57, research note
losa_restorelcc.md §1.1). `recovery=losa` over `score=wanda` or `score=sparsegpt`; it prunes the dense model itself.

    setup: masked LoRA (r = adapter_rank = 8, α = 16, dropout 0.1, 7 linears) on the dense model;
           dense targets D_ℓ = each block's output on the calibration set (stored on CPU)
    round t = 1..T:
        merge the masked LoRA into W                           (W ← W + s·M⊙BA; zeros stay zeros)
        s_t = s − s(1 − t/T)³, δ_t band                          (losa_math.round_sparsity / band_halfwidth)
        linear CKA between block inputs on the first `cka_nsamples` sequences → τ_ℓ, I_ℓ = exp(−β τ_ℓ)
        x = SLSQP(min Σ x_ℓ I_ℓ, mean x = s_t, x_ℓ ∈ [s_t ± δ_t])  (one ratio per block, all its linears)
        prune the MERGED weights with the run's scorer through the project's engine (CalibrationEngine +
            ApplyTargets, per-layer targets x_ℓ; inputs propagate through the pruned blocks)
        e_ℓ = reconstruction error of the pruned block outputs against D_ℓ
        unmerge (W ← W − s·M′⊙BA with the new mask: pruned entries are exactly 0)
        ranks ∝ e with Ω_t = Ω₁ + t − 1, clip [1, 16], one-pass repair → each block's `active_rank`
        fine-tune the masked LoRA on the round's shard (a new Trainer: fresh optimizer and warmup/decay)
        checkpoint (base weights + adapter + history) → `workdir/losa_round.pt`
    merge_and_unload (masked: the final model keeps exactly the pruned zeros)

Reference quirks kept as options whose defaults reproduce the reference (each in experiments/losa/NOTES.md):
`adapter_rank: 8` with `rank_max: 16` (ranks 9–16 are no-ops), `delta_above_07: null` (δ not reset above 0.7),
`cka_nsamples: 64` (13B: 32; the first N of the calibration set), the calibration seed 4 (calib.seed in the
experiment configs), the uneven shards (`train[1000:2000]` … `train[4000:10000]`), β by scorer.

Deviations: CKA is computed from each block's Gram matrix F Fᵀ accumulated batch by batch (the reference keeps all
L feature matrices on the GPU; the value is the same up to float rounding); weights, LoRA and training run in the
model's dtype with the Trainer's precision setting (the reference trains pure bf16 without autocast); the EOS label
masking comes from the data loader (repro/data/instruct.py) instead of trl's pad=eos collator.

Final sparsity (`final_sparsity`, NOT the reference's default): zeros never regrow across rounds (the masked delta
cannot touch them), so in the reference a layer pruned at s₄ + δ in round 4 keeps those zeros when round 5 gives it
s − δ: the model ends above s (SmolLM2 Wanda 70 %: 0.7039 against the uniform model's 0.6997). `exact` (default)
gives every layer the lower bound of the ratio it already has in each round's SLSQP (so each round's realised mean
is s_t), and in the last round turns the ratios into per-row prune counts per linear kind whose sum equals the
uniformly pruned model's (`losa_math.integer_counts`): the final zero count equals `recovery=none`'s exactly for
row-wise scorers (Wanda). SparseGPT chooses its mask per 128-column block with `sort[k]` (k + 1 entries, ties),
so there the counts are matched to the row-wise rule and the measured total may differ slightly (recorded as
`final_zeros` against `target_zeros`). `reference` keeps the reference's band and rounding.

Resume: a killed run restarts from the last completed round (`losa_round.pt`); a finished run stores the merged
weights (`final.safetensors`, `final.json`) and an evaluation-only change loads them instead of recomputing.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

from repro.config import ConfigError, check_range
from repro.data.instruct import InstructDataConfig, check_instruction_data, describe, load_instruction_data, parse_rows
from repro.methods.base import MethodConfig
from repro.prune.engine import BlockCallback, calibration_pass
from repro.prune.pipeline import ApplyTargets, measure_sparsity
from repro.recovery import losa_math as lm
from repro.recovery.base import Recovery
from repro.recovery.lora import LOSA_TARGETS, check_targets, lora_config
from repro.recovery.training import TrainingConfig, fine_tune
from repro.registry import build, register

log = logging.getLogger(__name__)

LOSA_SHARDS = ["1000:2000", "2000:3000", "3000:4000", "4000:5000", "4000:10000"]   # main.py:177-183
BETA = {"wanda": 1.0, "sparsegpt": 100.0}                                           # lib/prune.py:291, :545
CKPT, FINAL, FINAL_META = "losa_round.pt", "final.safetensors", "final.json"


@dataclass
class LosaConfig(MethodConfig):
    name: str = "losa"
    rounds: int = 5                      # T (main.py:147)
    omega0: float = 6                    # Ω₁, mean rank of round 1; +1 per round (main.py:148, :152)
    rank_min: int = 1                    # allocate_ranks clip (lib/prune.py:14-15)
    rank_max: int = 16
    adapter_rank: int = 8                # the adapter's r (main.py:69): allocated ranks above it are no-ops
    alpha: float = 16                    # main.py:70
    dropout: float = 0.1                 # main.py:82
    target_modules: list = field(default_factory=lambda: list(LOSA_TARGETS))
    beta: Optional[float] = None         # None: 1 for wanda, 100 for sparsegpt
    delta_above_07: Optional[float] = None   # None: keep the previous round's δ (the reference)
    cka_nsamples: int = 64               # CKA sequences: 64 (7B/8B), 32 (13B) — the first N of the calibration set
    prune_nsamples: Optional[int] = None  # pruning/error sequences; None = the whole calibration set (128)
    shards: list = field(default_factory=lambda: list(LOSA_SHARDS))
    final_sparsity: str = "exact"        # exact: zero count = the uniformly pruned model's; reference: as lib/prune.py
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: InstructDataConfig = field(default_factory=InstructDataConfig)

    def __post_init__(self):
        check_range("recovery.rounds", self.rounds, lo=1)
        check_range("recovery.rank_min", self.rank_min, lo=1)
        check_range("recovery.rank_max", self.rank_max, lo=self.rank_min)
        check_range("recovery.adapter_rank", self.adapter_rank, lo=1)
        check_range("recovery.omega0", self.omega0, lo=self.rank_min, hi=self.rank_max)
        check_range("recovery.cka_nsamples", self.cka_nsamples, lo=2)
        if self.prune_nsamples is not None:
            check_range("recovery.prune_nsamples", self.prune_nsamples, lo=1)
        check_targets(self.target_modules)
        if self.final_sparsity not in ("exact", "reference"):
            raise ConfigError("recovery.final_sparsity", self.final_sparsity, "exact or reference")
        if len(self.shards) != self.rounds:
            raise ConfigError("recovery.shards", self.shards, f"one row range per round ({self.rounds})")
        for i, s in enumerate(self.shards):
            parse_rows(s, f"recovery.shards[{i}]")


class _Observe(BlockCallback):
    """Engine callback that prunes nothing: hands each block's inputs (first group) and outputs to functions."""

    def __init__(self, on_inputs=None, on_outputs=None):
        self.on_inputs, self.on_outputs = on_inputs, on_outputs

    def on_group(self, ctx) -> None:
        if self.on_inputs is not None and ctx.group_index == 0:
            self.on_inputs(ctx.index, ctx.inputs.batches)

    def after_block(self, ctx, outputs) -> None:
        if self.on_outputs is not None:
            self.on_outputs(ctx.index, outputs)


class _PruneAndMeasure(ApplyTargets):
    """The standard pruning callback, plus each pruned block's reconstruction error against the dense outputs."""

    def __init__(self, scorer, targets, pattern, dense: List[torch.Tensor]):
        super().__init__(scorer, targets, pattern)
        self.dense, self.errors = dense, []

    def after_block(self, ctx, outputs) -> None:
        self.errors.append(lm.reconstruction_error(self.dense[ctx.index], torch.cat([o.cpu() for o in outputs])))


@register("recovery", "losa", LosaConfig)
class Losa(Recovery):
    needs_calibration = True
    prunes_itself = True

    def check(self, run) -> None:
        if run.score.name not in BETA:
            raise ConfigError("score.name", run.score.name, "wanda or sparsegpt for recovery=losa",
                              "LoSA prunes inside its rounds with Wanda or SparseGPT.")
        if run.pattern.name != "unstructured":
            raise ConfigError("pattern.name", run.pattern.name, "unstructured (the reference has no N:M path)")
        if run.allocation.name != "uniform":
            raise ConfigError("allocation.name", run.allocation.name,
                              "uniform (LoSA allocates layer-wise sparsity itself, by CKA)")
        for name in ("cka_nsamples", "prune_nsamples"):
            n = getattr(self.cfg, name)
            if n is not None and n > run.calib.nsamples:
                raise ConfigError(f"recovery.{name}", n, f"at most calib.nsamples = {run.calib.nsamples}")
        check_instruction_data(self.cfg.data)

    # -- engine passes -------------------------------------------------------------------------------------------
    def _dense_outputs(self, model, adapter, run, ids) -> List[torch.Tensor]:
        outs = {}
        calibration_pass(model, adapter, run,
                         _Observe(on_outputs=lambda i, o: outs.__setitem__(i, torch.cat([b.cpu() for b in o]))), ids)
        return [outs[i] for i in range(len(outs))]

    def _grams(self, model, adapter, run, ids) -> List[torch.Tensor]:
        grams = {}

        def gram(i, batches):
            f = torch.cat([b.reshape(b.shape[0], -1).float() for b in batches])
            grams[i] = (f @ f.t()).double().cpu()
        calibration_pass(model, adapter, run, _Observe(on_inputs=gram), ids)
        return [grams[i] for i in range(len(grams))]

    @staticmethod
    def _exact_targets(model, adapter, ratios, previous, s) -> tuple:
        """Last round of `final_sparsity=exact`: per-linear targets whose per-row counts sum, per linear kind, to
        the uniform model's `int(cols · s)` per row, never below the counts the layers already have."""
        linears, n_blocks = adapter.all_linears(model), len(adapter.blocks(model))
        targets, counts, zeros = {}, {}, 0
        for n in adapter.linear_names:
            names = [f"{adapter.block_prefix(i, model)}.{n}" for i in range(n_blocks)]
            shapes = {tuple(linears[m].weight.shape) for m in names}
            if len(shapes) != 1:
                raise ValueError(f"LoSA exact final sparsity needs one shape per linear kind; {n}: {shapes}")
            rows, cols = shapes.pop()
            lower = [int(cols * p) for p in previous] if previous is not None else [0] * len(names)
            k = lm.integer_counts(ratios, cols, len(names) * int(cols * s), lower)
            targets.update({m: (k_i + 0.5) / cols for m, k_i in zip(names, k)})
            counts[n], zeros = k, zeros + rows * sum(k)
        return targets, counts, zeros

    def _prune(self, model, adapter, run, ids, ratios, dense, targets=None) -> List[float]:
        targets = targets or adapter.block_targets(model, ratios)
        callback = _PruneAndMeasure(build("score", run.score), targets, run.pattern, dense)
        return calibration_pass(model, adapter, run, callback, ids).errors

    # -- the rounds ----------------------------------------------------------------------------------------------
    def recover(self, model, tokenizer, run, calib, workdir: Path) -> dict:
        from peft import get_peft_model

        from repro.models.adapter import adapter_for
        from repro.recovery.masked_lora import MaskedLoraLinear

        cfg, workdir = self.cfg, Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        adapter = adapter_for(model)
        if (workdir / FINAL).is_file() and (workdir / FINAL_META).is_file():
            return self._load_final(model, adapter, workdir)
        ids = calib.input_ids
        prune_ids = ids[:cfg.prune_nsamples] if cfg.prune_nsamples else ids
        cka_ids = ids[:cfg.cka_nsamples]
        beta = cfg.beta if cfg.beta is not None else BETA[run.score.name]
        peft_model = get_peft_model(model, lora_config(cfg, r=cfg.adapter_rank))
        blocks = adapter.blocks(model)
        layers = [[m for m in b.modules() if isinstance(m, MaskedLoraLinear)] for b in blocks]

        peft_model.eval()
        t0 = time.perf_counter()
        peft_model.merge_adapter()
        dense = self._dense_outputs(model, adapter, run, prune_ids)
        peft_model.unmerge_adapter()
        report = {"method": "losa", "beta": beta, "data": describe(cfg.data, rows=list(cfg.shards)),
                  "dense_targets_s": time.perf_counter() - t0,
                  "rounds": []}
        delta = None
        start = 1
        if (workdir / CKPT).is_file():
            state = torch.load(workdir / CKPT, map_location="cpu", weights_only=False)
            self._restore(peft_model, layers, state)
            report["rounds"], delta, start = state["history"], state["delta"], state["round"] + 1
            report["resumed_after_round"] = state["round"]
            log.info("losa: resuming after round %d", state["round"])
        for t in range(start, cfg.rounds + 1):
            rt = {"round": t}
            t0 = time.perf_counter()
            peft_model.eval()
            peft_model.merge_adapter()
            s_t = lm.round_sparsity(run.sparsity, t, cfg.rounds)
            delta = lm.band_halfwidth(s_t, delta, cfg.delta_above_07)
            grams = self._grams(model, adapter, run, cka_ids)
            importance = lm.layer_importance(lm.cka_matrix(grams), beta)
            exact = cfg.final_sparsity == "exact"
            previous = report["rounds"][-1]["ratios"] if report["rounds"] else None
            ratios = lm.layer_ratios(importance, s_t, delta, lower=previous if exact else None)
            targets = None
            if exact and t == cfg.rounds:
                targets, rt["counts"], rt["target_zeros"] = self._exact_targets(model, adapter, ratios, previous,
                                                                                run.sparsity)
            errors = self._prune(model, adapter, run, prune_ids, ratios, dense, targets)
            peft_model.unmerge_adapter()
            omega = lm.omega(t, cfg.omega0)
            ranks = lm.allocate_ranks(errors, omega, cfg.rank_min, cfg.rank_max)
            for rank, mods in zip(ranks, layers):
                for m in mods:
                    m.active_rank = rank
            rt.update(sparsity_target=s_t, delta=delta, importance=importance.tolist(), ratios=ratios,
                      errors=errors, omega=omega, ranks=ranks, sparsity=measure_sparsity(model, adapter)["overall"],
                      prune_s=time.perf_counter() - t0)
            train, _ = load_instruction_data(cfg.data, tokenizer, rows=cfg.shards[t - 1])
            rt["shard"] = cfg.shards[t - 1]
            rt["training"] = fine_tune(peft_model, tokenizer, train, None, cfg.training, workdir / f"round{t}",
                                       desc=f"LoSA round {t}")
            rt["round_s"] = time.perf_counter() - t0
            report["rounds"].append(rt)
            log.info("losa round %d: target %.4f, measured %.4f, ranks %s", t, s_t, rt["sparsity"], ranks)
            self._checkpoint(peft_model, layers, t, delta, report["rounds"], workdir)
        peft_model.eval()
        peft_model.merge_and_unload()
        report["final_sparsity"] = measure_sparsity(model, adapter)["overall"]
        report["final_zeros"] = sum(int((m.weight == 0).sum()) for m in adapter.all_linears(model).values())
        report["final_sparsity_mode"] = cfg.final_sparsity
        self._save_final(model, adapter, workdir, report)
        return report

    # -- persistence ---------------------------------------------------------------------------------------------
    @staticmethod
    def _checkpoint(peft_model, layers, t, delta, history, workdir: Path) -> None:
        from peft import get_peft_model_state_dict

        state = {"round": t, "delta": delta, "history": history,
                 "base": [[m.get_base_layer().weight.detach().cpu().clone() for m in mods] for mods in layers],
                 "ranks": [[m.active_rank for m in mods] for mods in layers],
                 "adapter": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(peft_model).items()}}
        tmp = workdir / (CKPT + ".tmp")
        torch.save(state, tmp)
        tmp.replace(workdir / CKPT)

    @staticmethod
    @torch.no_grad()
    def _restore(peft_model, layers, state) -> None:
        from peft import set_peft_model_state_dict

        for mods, weights, ranks in zip(layers, state["base"], state["ranks"]):
            for m, w, r in zip(mods, weights, ranks):
                m.get_base_layer().weight.copy_(w)
                m.active_rank = r
        set_peft_model_state_dict(peft_model, state["adapter"])

    @staticmethod
    def _save_final(model, adapter, workdir: Path, report: dict) -> None:
        from safetensors.torch import save_file

        weights = {n: m.weight.detach().cpu().contiguous() for n, m in adapter.all_linears(model).items()}
        save_file(weights, str(workdir / (FINAL + ".tmp")))
        (workdir / (FINAL + ".tmp")).replace(workdir / FINAL)
        (workdir / FINAL_META).write_text(json.dumps(report, indent=1, default=float))

    @staticmethod
    @torch.no_grad()
    def _load_final(model, adapter, workdir: Path) -> dict:
        from safetensors.torch import load_file

        weights = load_file(str(workdir / FINAL))
        for name, m in adapter.all_linears(model).items():
            m.weight.copy_(weights[name])
        report = json.loads((workdir / FINAL_META).read_text())
        report["reused_final_weights"] = True
        log.info("losa: loaded the merged sparse weights of a finished run from %s", workdir)
        return report
