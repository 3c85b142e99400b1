"""`repro diff`'s text: a `compare.runs.diff_records` result, section by section."""
from __future__ import annotations

import json


def _v(x) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    s = json.dumps(x) if not isinstance(x, str) else x
    return s if len(s) <= 70 else s[:67] + "..."


def format_diff(d: dict) -> str:
    out = [f"A: {d['a']['run_dir']}  (identity {d['a']['identity']}, {d['a']['status']})",
           f"B: {d['b']['run_dir']}  (identity {d['b']['identity']}, {d['b']['status']})",
           "same identity: the same experiment" if d["same_identity"] else "different identities", ""]
    out.append(f"config ({len(d['config'])} fields differ; * = part of the identity, changes numbers):")
    out += [f"  {'*' if c['identity'] else ' '} {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["config"]] \
        or ["    (none)"]
    out.append(f"\nprotocol fingerprint ({len(d['protocol'])} fields differ):")
    out += [f"    {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["protocol"]] or ["    (none)"]
    out.append("\nmetrics:")
    for m in d["metrics"]:
        rel = "" if m["rel_delta"] is None else f" ({m['rel_delta']:+.2%})"
        delta = "" if m["delta"] is None else f"  Δ {m['delta']:+.6g}{rel}"
        out.append(f"    {m['metric']}: {_v(m['a'])} -> {_v(m['b'])}{delta}")
    if not d["metrics"]:
        out.append("    (none)")
    s = d["sparsity"]
    out.append(f"\nmeasured sparsity: {_v(s['a'])} -> {_v(s['b'])}")
    out.append(f"\nversions ({len(d['versions'])} differ):")
    out += [f"    {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["versions"]] or ["    (none)"]
    out.append(f"\nruntime ({len(d['runtime'])} differ; outside the identity, CPU reductions split by thread count):")
    out += [f"    {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["runtime"]] or ["    (none)"]
    out.append("\ntimings:")
    out += [f"    {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["timings"]] or ["    (none)"]
    return "\n".join(out)
