"""`repro diff <runA> <runB>`: what differs between two runs — the first thing to run when a number is off.

    repro diff results/runs/3f9c0a1b2c3d4e5f results/runs/7254e72d52b4b657
    repro diff 3f9c0a1b 7254e72d                      # identities (or unique prefixes) under --results

Sections: the config fields that differ (marked `*` when they are part of the identity, i.e. change numbers),
the protocol fingerprint (seqlen, data sources, windows, calibration picks...), every metric (A, B, Δ, relative
Δ), the measured sparsity, versions and timings.
"""
from __future__ import annotations

import json
from pathlib import Path

from repro.collect.records import migrate
from repro.collect.yamlio import DataFileError
from repro.record import RECORD_FILE


def resolve_run(arg: str, results: str | Path = "results") -> dict:
    """A record from a run directory, a result.json path, or an identity (prefix) under <results>/runs."""
    p = Path(arg)
    candidates = [p / RECORD_FILE if p.is_dir() else p] if p.exists() else []
    if not candidates:
        runs = Path(results) / "runs"
        matches = sorted(runs.glob(f"{arg}*/{RECORD_FILE}")) if runs.is_dir() and arg else []
        if len(matches) > 1:
            raise DataFileError(runs, None, "run", arg, "a unique identity prefix",
                                "Matches: " + ", ".join(m.parent.name for m in matches[:8]))
        candidates = matches
    if not candidates or not candidates[0].is_file():
        raise DataFileError(arg, None, "run", arg, f"a run directory, a {RECORD_FILE}, or an identity under "
                            f"{Path(results) / 'runs'}")
    path = candidates[0]
    try:
        rec = migrate(json.loads(path.read_text()), path)
    except (json.JSONDecodeError, ValueError) as e:
        raise DataFileError(path, None, "record", str(e).splitlines()[0], "a readable run record") from None
    rec.setdefault("run_dir", str(path.parent))
    return rec


def flatten(node, prefix: str = "") -> dict:
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = node
    return out


def _changed(a: dict, b: dict) -> list:
    fa, fb = flatten(a or {}), flatten(b or {})
    return [(k, fa.get(k, "<absent>"), fb.get(k, "<absent>")) for k in sorted(set(fa) | set(fb))
            if fa.get(k, "<absent>") != fb.get(k, "<absent>")]


def diff_records(a: dict, b: dict) -> dict:
    ident = flatten(a.get("identity_fields") or {}) | flatten(b.get("identity_fields") or {})
    metrics = []
    fa, fb = flatten(a.get("metrics") or {}), flatten(b.get("metrics") or {})
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k), fb.get(k)
        num = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb))
        metrics.append({"metric": k, "a": va, "b": vb, "delta": vb - va if num else None,
                        "rel_delta": (vb - va) / abs(va) if num and va else None})
    return {
        "a": {"run_dir": a.get("run_dir"), "identity": a.get("identity"), "status": a.get("status")},
        "b": {"run_dir": b.get("run_dir"), "identity": b.get("identity"), "status": b.get("status")},
        "same_identity": a.get("identity") == b.get("identity"),
        "config": [{"field": k, "a": x, "b": y, "identity": k in ident} for k, x, y in
                   _changed(a.get("config"), b.get("config"))],
        "protocol": [{"field": k, "a": x, "b": y} for k, x, y in _changed(a.get("protocol"), b.get("protocol"))],
        "metrics": metrics,
        "sparsity": {"a": (a.get("sparsity") or {}).get("overall"), "b": (b.get("sparsity") or {}).get("overall")},
        "versions": [{"field": k, "a": x, "b": y} for k, x, y in _changed(a.get("versions"), b.get("versions"))],
        "timings": [{"field": k, "a": x, "b": y} for k, x, y in _changed(a.get("timings"), b.get("timings"))],
    }


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
    out.append("\ntimings:")
    out += [f"    {c['field']}: {_v(c['a'])} -> {_v(c['b'])}" for c in d["timings"]] or ["    (none)"]
    return "\n".join(out)
