"""The paper's evaluation protocol vs a run's fingerprint (`record["protocol"]`): what differs, in words.

A layout (`tables.yaml`) states the protocol its reported numbers assume, e.g.

    protocol: {seqlen: 2048, dtype: float16, ppl_source: hub, ppl_all_windows: true,
               calib: c4, calib_nsamples: 128, calib_seed: 0,
               zeroshot_metric: acc, zeroshot_bos: false, zeroshot_harness: "lm-eval df3da98 (0.3 fork)"}

and each record used in a cell is checked against it. The verdict of the cell is kept (the numbers are what they
are) but the cell is flagged "protocol differs" and the differences are listed, e.g. `ppl source local (paper: hub)`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Optional

from repro.collect.keys import config_value


def _ppl(record, metric_name):
    ds = metric_name.split(".", 1)[1] if metric_name.startswith("ppl.") else None
    return (record.get("protocol", {}).get("ppl", {}) or {}).get(ds) if ds else None


def _seqlen(record, metric_name):
    if not metric_name.startswith("ppl."):
        return _SKIP                  # lm-eval and cost metrics do not use the model's evaluation windows
    fp = _ppl(record, metric_name)
    return (fp or {}).get("seqlen", record.get("protocol", {}).get("seqlen"))


def _zeroshot(get: Callable) -> Callable:
    """A zero-shot check: skipped for other metrics; `get(protocol.zeroshot, task or None)`."""
    def check(record, metric_name):
        if not metric_name.startswith("zeroshot."):
            return _SKIP
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
            return _SKIP
        return cal.get(field)
    return get


def _neuronal_block_grid(record, metric_name):
    """How many λ candidates NeuronAL's block search tried (the record's `block_objectives`); other allocations and
    `allocation.step=row` (no block search) have nothing to compare."""
    if ((record.get("config") or {}).get("allocation") or {}).get("name") != "neuronal":
        return _SKIP
    objectives = ((record.get("prune") or {}).get("allocation_report") or {}).get("block_objectives")
    return len(objectives) if objectives is not None else _SKIP


def _ppl_split(record, metric_name):
    """The hub split of a perplexity set; local files (and non-ppl metrics) have none to compare."""
    source = (_ppl(record, metric_name) or {}).get("source") or {}
    return source.get("split") if source.get("kind") == "hub" else _SKIP


def _lua_effective_batch(record, metric_name):
    """Lua-LLM's windows per optimisation step over all processes (`allocation_report.effective_batch`; records
    written before it existed: the config's per-process `batch_size`, every such run being single-process)."""
    alloc = (record.get("config") or {}).get("allocation") or {}
    if alloc.get("name") != "lua_llm":
        return _SKIP
    report = (record.get("prune") or {}).get("allocation_report") or {}
    return report.get("effective_batch", alloc.get("batch_size"))


_SKIP = object()

# name -> (extractor(record, metric) -> value, how to say it)
CHECKS = {
    "seqlen": (_seqlen, "seqlen"),
    "dtype": (lambda r, m: r.get("protocol", {}).get("dtype", config_value(r, "config.model.dtype")), "dtype"),
    "ppl_source": (lambda r, m: (((_ppl(r, m) or {}).get("source") or {}).get("kind")) if _ppl(r, m) else _SKIP,
                   "ppl data source"),
    "ppl_all_windows": (lambda r, m: ((_ppl(r, m) or {}).get("max_windows") is None) if _ppl(r, m) else _SKIP,
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


def deviations(record: dict, metric_name: str, expected: Optional[dict]) -> list:
    """Human-readable differences between a record's fingerprint and the paper protocol (empty if none)."""
    out = []
    for name, want in (expected or {}).items():
        get, words = CHECKS[name]
        got = get(record, metric_name)
        if got is _SKIP or got == want:
            continue
        if isinstance(want, bool):
            out.append(f"{words}: {'yes' if got else 'no'} (paper: {'yes' if want else 'no'})")
        else:
            out.append(f"{words} {got} (paper: {want})")
    return out


@lru_cache(maxsize=None)
def _method_defaults(kind: str, name: str) -> Optional[dict]:
    """The registered schema's defaults for a method, or None if the method is not built (yet)."""
    import dataclasses

    from repro.registry import names, validate_method_node

    try:
        if name not in names(kind):
            return None
        return dataclasses.asdict(validate_method_node(kind, {"name": name}))
    except Exception:  # noqa: BLE001 — an unbuildable schema only means "no defaults to compare with"
        return None


def method_deviations(record: dict, selected: tuple = (), paper_options: Optional[dict] = None) -> list:
    """Method options of the run that differ from what the paper ran — the method's defaults, overridden by the
    layout's `method_options` (`{"allocation.owl.clamp": "neuronal"}`) — and that the cell does not select
    (e.g. `score.use_variant=True (default False)`): the cell then is not the paper's plain method."""
    out = []
    chosen = {k for k, _ in selected}
    for kind in ("score", "allocation", "recovery"):
        node = (record.get("config") or {}).get(kind) or {}
        name = node.get("name")
        defaults = _method_defaults(kind, name)
        if not defaults:
            continue
        prefix = f"{kind}.{name}."
        expected = {**defaults, **{k[len(prefix):]: v for k, v in (paper_options or {}).items() if k.startswith(prefix)}}
        for field, value in node.items():
            if field != "name" and f"config.{kind}.{field}" not in chosen and field in expected \
                    and value != expected[field]:
                origin = "paper" if f"{prefix}{field}" in (paper_options or {}) else "default"
                out.append(f"{kind}.{field}={value} ({origin} {expected[field]})")
    return out
