"""Multi-objective runs: one calibration pass over every domain, then a model per preference λ, each evaluated on
every domain's test data; the Pareto front and (with an explicit reference point) its hypervolume go to the record.

    python -m repro.cli run env=offline score=mosp sparsity=0.5                        # MOSP, C4 + GSM8K stand-ins
    python -m repro.cli run env=offline score=sparsegpt +objectives=c4_gsm8k sparsity=0.5   # SparseGPT, Ext. 1

Entered from repro/run.py (`run_preference_grid`) when `objectives` is set. Two kinds of runs:
- **MOSP** (`score=mosp`, repro/methods/mosp.py): the engine pass solves stages 1-3 per linear and stores W, W_i,
  S_c and x once under `<run_dir>/mosp/`; every preference's model is then assembled from that store
  (`MospStore.apply`) — no data, no re-pruning;
- **Extension 1** (magnitude, Wanda, SparseGPT, ALPS; research note §2.6): the engine pass keeps each linear's
  per-domain statistics; the model of λ is the single-objective pruner run on H_λ = Σ λ_i H_i
  (`LayerStats.weighted`) — statistics gathered once and reweighted, not recollected per λ.
Which outputs feed the next block during the one pass (`objectives.propagate`): `shared` — MOSP's stage-1 W, and
for Extension 1 the model pruned on the pooled statistics (the same H = Σ H_i as MOSP's stage 1); `dense` — the
dense model's. Either way every preference model is built from the same statistics.

The dense weights are kept (CPU) and restored before each preference's model is built. Evaluation per domain: the
domain's test stream (repro/data/domains.py) with the run's `eval.ppl` seqlen/batch/max_windows.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch

from repro.config import ConfigError

log = logging.getLogger(__name__)

EXTENSION1 = ("magnitude", "wanda", "sparsegpt", "alps")


def check_objectives(cfg) -> None:
    """Preflight of a multi-objective run (before the model loads)."""
    from repro.data.domains import check_test_data

    obj = cfg.objectives
    if obj is None:
        return
    from repro.registry import method_class, names

    allowed = EXTENSION1 + ("mosp",) + tuple(n for n in names("score") if not method_class("score", n).prunes)
    if cfg.score.name not in allowed:
        raise ConfigError("score.name", cfg.score.name, "one of " + ", ".join(allowed),
                          "Multi-objective runs exist for MOSP and the Extension-1 baselines.")
    if cfg.allocation.name != "uniform" or cfg.recovery.name != "none":
        raise ConfigError("allocation" if cfg.allocation.name != "uniform" else "recovery",
                          cfg.allocation.name if cfg.allocation.name != "uniform" else cfg.recovery.name,
                          "uniform allocation and no recovery in a multi-objective run")
    seqlen = cfg.model.seqlen
    for i, d in enumerate(obj.domains):
        check_test_data(f"objectives.domains[{i}]", d, obj.standins, cfg.eval.ppl.seqlen or seqlen,
                        cfg.calib.seqlen or seqlen)


def prune_items(scorer, items, pattern) -> None:
    """Prune (full name, linear, stats, target) items as the standard pipeline does (prune_group when present)."""
    from repro.prune.pipeline import ApplyTargets

    ApplyTargets(scorer, {}, pattern)._prune(items)


def extension1_model(scorer, cb, linears: dict, lam, targets: dict, pattern, per_token: bool = False) -> None:
    """Prune the (dense) `linears` in place for preference λ: the scorer on H_λ = Σ λ_i H_i, block by block; linears
    that shared statistics share the reweighted ones (SparseGPT's one inverse for q/k/v)."""
    for _, block_names in cb.block_items or [(0, list(linears))]:
        weighted: dict = {}
        items = []
        for n in block_names:
            st = cb.kept_stats.get(n)
            if st is not None and id(st) not in weighted:
                weighted[id(st)] = st.weighted(lam, per_token).to(linears[n].weight.device)
            items.append((n, linears[n], weighted.get(id(st)), targets[n]))
        prune_items(scorer, items, pattern)


class _Pass:
    """The engine callback of the one calibration pass (MOSP stages 1-3, or Extension 1's statistics)."""

    needs_inputs_after_block = False

    def __init__(self, scorer, cfg, targets, store=None):
        self.scorer, self.cfg, self.targets, self.store = scorer, cfg, targets, store
        self.stats = frozenset(scorer.stats)
        self.kept_stats: dict = {}                   # Extension 1: full name -> LayerStats (CPU, with parts)
        self.block_items: list = []                  # Extension 1: [(block index, [full names])]
        self.reports: dict = {}
        self._solutions: dict = {}

    def on_group(self, ctx) -> None:
        items = [(ctx.full_name(rel), lin, ctx.stats[rel], self.targets[ctx.full_name(rel)])
                 for rel, lin in ctx.linears.items()]
        if self.store is not None:
            self._mosp(items)
            return
        self.block_items.append((ctx.index, [i[0] for i in items]))
        if self.cfg.objectives.propagate == "shared" and self.scorer.prunes:
            prune_items(self.scorer, items, self.cfg.pattern)      # the pooled statistics: λ = (1/m, …, 1/m)
        for full, _, st, _ in items:
            self.kept_stats[full] = st.to("cpu")                   # kept for every λ (host memory)

    def _mosp(self, items) -> None:
        from repro.methods.alps import Normalized, layer_pattern
        from repro.methods.mosp import solve_layer, task_hessians, task_problem

        mcfg, mode = self.cfg.score, self.cfg.objectives.task_hessian
        for full, lin, st, target in items:
            Hs = st.derived(("mosp_tasks", mode), lambda s: task_hessians(s, mode))
            prob = st.derived(("mosp_shared", mcfg.ridge), lambda s: Normalized.of(sum(Hs), mcfg.ridge))
            tprobs = st.derived(("mosp_task_problems", mcfg.gamma, mcfg.gamma_rule, mcfg.stage2_rho),
                                lambda s: [task_problem(H, mcfg) for H in Hs])
            W = lin.weight.data
            pat = layer_pattern(W.numel(), target, self.cfg.pattern)
            sol = solve_layer(W.to(prob.A.device), None, Hs, pat, mcfg, prob, tprobs)
            self._solutions[full] = sol
            self.reports[full] = sol.report
            lin.weight.data.copy_(sol.shared.to(W.device, W.dtype))   # what propagates under `shared`

    def after_block(self, ctx, outputs) -> None:
        if self.store is not None:
            self.store.save_block(ctx.index, self._solutions, next(iter(ctx.linears.values())).weight.dtype)
            self._solutions = {}


def _domain_data(run, record, tokenizer, seqlen, needs_calib: bool):
    from repro.data.calibration import load_calibration
    from repro.data.domains import calib_config, test_source
    from repro.data.perplexity import load_ppl_stream

    cfg, obj = run.cfg, run.cfg.objectives
    L = cfg.eval.ppl.seqlen or seqlen
    calib_ids, streams = [], []
    record["protocol"]["calibration"], record["protocol"]["ppl"] = {}, {}
    t = time.perf_counter()
    for d in obj.domains:
        if needs_calib:
            cs = load_calibration(calib_config(d, cfg.calib, obj.standins), tokenizer, cfg.calib.seqlen or seqlen)
            calib_ids.append(cs.input_ids)
            record["protocol"]["calibration"][d.name] = {**cs.fingerprint, "standin": obj.standins}
        name, source = test_source(d, obj.standins)
        ids, fp = load_ppl_stream(name, source, tokenizer, L)
        streams.append(ids)
        record["protocol"]["ppl"][d.name] = {**fp, "seqlen": L, "max_windows": cfg.eval.ppl.max_windows,
                                             "standin": obj.standins}
    record["timings"]["data_s"] = time.perf_counter() - t
    return calib_ids, streams, L


def _evaluate(model, streams, L, ppl_cfg) -> list:
    from repro.eval.perplexity import perplexity

    return [perplexity(model, ids, L, ppl_cfg.batch_size, ppl_cfg.max_windows, desc="ppl")[0] for ids in streams]


def run_preference_grid(run, record: dict, model, tokenizer, adapter, seqlen: int, out_dir: Path) -> None:
    """The whole multi-objective run (calibrate once → models per preference → evaluate → front/HV) into `record`."""
    from repro.methods._pareto import hypervolume, pareto_front, preference_grid
    from repro.methods.base import AllocationContext
    from repro.methods.mosp import map_preference
    from repro.methods.mosp_store import MospStore
    from repro.prune.engine import calibration_pass
    from repro.prune.pipeline import measure_sparsity
    from repro.registry import build

    cfg, obj = run.cfg, run.cfg.objectives
    names = [d.name for d in obj.domains]
    scorer = build("score", cfg.score)
    is_mosp = cfg.score.name == "mosp"
    needs_calib = scorer.needs_calibration
    calib_ids, streams, L = _domain_data(run, record, tokenizer, seqlen, needs_calib)
    linears = adapter.all_linears(model)
    dense = {n: lin.weight.detach().to("cpu", copy=True) for n, lin in linears.items()}
    prefs = preference_grid(len(names), obj.partitions, obj.preferences) if scorer.prunes else [None]
    targets = build("allocation", cfg.allocation).allocate(
        AllocationContext(model, adapter, cfg, scorer, None, {})) if scorer.prunes else {}

    t = time.perf_counter()
    store = MospStore(out_dir / "mosp") if is_mosp else None
    cb = _Pass(scorer, cfg, targets, store)
    if scorer.prunes and (needs_calib or is_mosp):
        calibration_pass(model, adapter, cfg, cb, torch.cat(calib_ids) if needs_calib else None,
                         domain_sizes=[len(c) for c in calib_ids],
                         propagate="dense" if obj.propagate == "dense" else "pruned")
    record["timings"]["prune_s"] = time.perf_counter() - t
    if is_mosp:
        store.write_manifest({"domains": names, "sparsity": cfg.sparsity, "pattern": dataclasses.asdict(cfg.pattern),
                              "alpha": cfg.score.alpha, "mapping": cfg.score.mapping,
                              "temperature": cfg.score.temperature, "assembly_score": cfg.score.assembly_score})

    rows, mapped, sparsity, build_s, eval_s = [], [], [], 0.0, 0.0
    for k, lam in enumerate(prefs):
        t = time.perf_counter()
        for n, lin in linears.items():
            lin.weight.data.copy_(dense[n].to(lin.weight.device))
        if is_mosp:
            store.apply(model, adapter, lam)
            mapped.append(map_preference(lam, cfg.score.mapping, cfg.score.temperature).tolist())
        elif scorer.prunes:
            extension1_model(scorer, cb, linears, lam, targets, cfg.pattern, obj.task_hessian == "total")
        build_s += time.perf_counter() - t
        sparsity.append(measure_sparsity(model, adapter)["overall"])
        t = time.perf_counter()
        rows.append(_evaluate(model, streams, L, cfg.eval.ppl))
        eval_s += time.perf_counter() - t
        log.info("preference %d/%d %s: %s", k + 1, len(prefs), lam,
                 ", ".join(f"{n} ppl {v:.3f}" for n, v in zip(names, rows[-1])))
    front = pareto_front(rows)
    pareto = {"domains": names, "preferences": prefs, "ppl": rows, "front": front, "sparsity": sparsity}
    if mapped:
        pareto["mapped_preferences"] = mapped
    if obj.hv_reference is not None:
        pareto.update(hv=hypervolume(rows, obj.hv_reference), hv_reference=list(obj.hv_reference),
                      hv_rule="explicit (objectives.hv_reference)")
    pareto["best"] = {n: min(r[i] for r in rows) for i, n in enumerate(names)}
    record["metrics"]["pareto"] = pareto      # no `metrics.ppl`: these are not one model's (single-objective) cells
    record["prune"] = {"score": cfg.score.name, "kind": "mosp" if is_mosp else ("extension1" if scorer.prunes
                       else "dense"), "preferences": len(prefs), "propagate": obj.propagate,
                       "task_hessian": obj.task_hessian, "store": str(store.path) if store else None,
                       "layers": _summary(cb.reports)}
    record["sparsity"] = {"overall": max(sparsity), "per_preference": sparsity}
    record["timings"].update(models_s=build_s, eval_s=eval_s)
    for n, lin in linears.items():               # leave the model dense (nothing downstream may mistake it)
        lin.weight.data.copy_(dense[n].to(lin.weight.device))


def _summary(reports: dict) -> dict:
    if not reports:
        return {}
    its = [r["iterations"] for r in reports.values()]
    return {"linears": len(its), "admm_iterations_mean": sum(its) / len(its), "admm_iterations_max": max(its),
            "restarts": sum(r["restarts"] for r in reports.values()),
            "core_weights": sum(r["core"] for r in reports.values()),
            "core_outside_alps_pk": sum(r["core_outside_pk"] for r in reports.values())}
