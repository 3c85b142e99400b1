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
from typing import Optional

from repro.collect.records.protocol import CHECKS, SKIP


def deviations(record: dict, metric_name: str, expected: Optional[dict]) -> list:
    """Human-readable differences between a record's fingerprint and the paper protocol (empty if none)."""
    out = []
    for name, want in (expected or {}).items():
        get, words = CHECKS[name]
        got = get(record, metric_name)
        if got is SKIP or got == want:
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
                out += [f"{kind}.{path}={v} ({origin} {e})" for path, v, e in _leaf_diffs(field, value, expected[field])]
    return out


def _leaf_diffs(path: str, value, expected):
    """(dotted path, value, expected) of every differing leaf: a nested node (`recovery.training`) names only the
    fields that differ, not two whole dictionaries."""
    if isinstance(value, dict) and isinstance(expected, dict):
        for key in sorted(set(value) | set(expected)):
            if value.get(key) != expected.get(key):
                yield from _leaf_diffs(f"{path}.{key}", value.get(key), expected.get(key))
    elif value != expected:
        yield path, value, expected
