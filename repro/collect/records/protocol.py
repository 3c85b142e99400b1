"""A record's evaluation protocol, field by field: the checks a paper layout may state (`tables.yaml` `protocol:`),
each an extractor `(record, metric) -> value` (or `SKIP` where the check does not apply to that metric) and the
words that name it. `repro.collect.compare.protocol` compares them with the paper's values."""
from __future__ import annotations

from typing import Callable

from repro.record import dotted_get


def _ppl(record, metric_name):
    ds = metric_name.split(".", 1)[1] if metric_name.startswith("ppl.") else None
    return (record.get("protocol", {}).get("ppl", {}) or {}).get(ds) if ds else None


def _seqlen(record, metric_name):
    if not metric_name.startswith("ppl."):
        return SKIP                  # lm-eval and cost metrics do not use the model's evaluation windows
    fp = _ppl(record, metric_name)
    return (fp or {}).get("seqlen", record.get("protocol", {}).get("seqlen"))


def _zeroshot(get: Callable) -> Callable:
    """A zero-shot check: skipped for other metrics; `get(protocol.zeroshot, task or None)`."""
    def check(record, metric_name):
        if not metric_name.startswith("zeroshot."):
            return SKIP
        zs = record.get("protocol", {}).get("zeroshot")
        if not zs:
            return None
        task = metric_name.split(".", 1)[1]
        return get(zs, None if task == "mean" else task)
    return check


def _task_metric(zs, task):
    tasks = zs.get("tasks") or {}
    names = sorted({row.get("metric") for t, row in tasks.items() if task is None or t == task})
    return names[0] if len(names) == 1 else ",".join(map(str, names)) or None


def _calib(field: str) -> Callable:
    def get(record, metric_name):
        cal = record.get("protocol", {}).get("calibration")
        if cal is None:           # dense runs and calibration-free methods have none: nothing to compare
            return SKIP
        return cal.get(field)
    return get


def _neuronal_block_grid(record, metric_name):
    """How many λ candidates NeuronAL's block search tried (the record's `block_objectives`); other allocations and
    `allocation.step=row` (no block search) have nothing to compare."""
    if ((record.get("config") or {}).get("allocation") or {}).get("name") != "neuronal":
        return SKIP
    objectives = ((record.get("prune") or {}).get("allocation_report") or {}).get("block_objectives")
    return len(objectives) if objectives is not None else SKIP


def _ppl_split(record, metric_name):
    """The hub split of a perplexity set; local files (and non-ppl metrics) have none to compare."""
    source = (_ppl(record, metric_name) or {}).get("source") or {}
    return source.get("split") if source.get("kind") == "hub" else SKIP


def _lua_effective_batch(record, metric_name):
    """Lua-LLM's windows per optimisation step over all processes (`allocation_report.effective_batch`; records
    written before it existed: the config's per-process `batch_size`, every such run being single-process)."""
    alloc = (record.get("config") or {}).get("allocation") or {}
    if alloc.get("name") != "lua_llm":
        return SKIP
    report = (record.get("prune") or {}).get("allocation_report") or {}
    return report.get("effective_batch", alloc.get("batch_size"))


SKIP = object()


# name -> (extractor(record, metric) -> value, how to say it)
CHECKS = {
    "seqlen": (_seqlen, "seqlen"),
    "dtype": (lambda r, m: r.get("protocol", {}).get("dtype", dotted_get(r, "config.model.dtype")), "dtype"),
    "ppl_source": (lambda r, m: (((_ppl(r, m) or {}).get("source") or {}).get("kind")) if _ppl(r, m) else SKIP,
                   "ppl data source"),
    "ppl_all_windows": (lambda r, m: ((_ppl(r, m) or {}).get("max_windows") is None) if _ppl(r, m) else SKIP,
                        "all ppl windows"),
    "zeroshot_metric": (_zeroshot(_task_metric), "zero-shot metric"),
    "zeroshot_bos": (_zeroshot(lambda zs, t: zs.get("bos_in_inputs")), "BOS in zero-shot inputs"),
    "zeroshot_limit": (_zeroshot(lambda zs, t: zs.get("limit")), "zero-shot example limit"),
    "zeroshot_harness": (_zeroshot(lambda zs, t: f"lm-eval {zs.get('lm_eval_version')}"), "harness"),
    "calib": (_calib("name"), "calibration set"),
    "calib_nsamples": (_calib("nsamples"), "calibration samples"),
    "calib_seqlen": (_calib("seqlen"), "calibration seqlen"),
    "calib_seed": (_calib("seed"), "calibration seed"),
    "neuronal_lambdas_block": (_neuronal_block_grid, "NeuronAL block λ candidates"),
    "ppl_split": (_ppl_split, "ppl split"),
    "lua_effective_batch": (_lua_effective_batch, "Lua-LLM windows per step"),
}
