"""`repro diff <runA> <runB>`: what differs between two runs — the first thing to run when a number is off.

    repro diff results/runs/3f9c0a1b2c3d4e5f results/runs/7254e72d52b4b657
    repro diff 3f9c0a1b 7254e72d                      # identities (or unique prefixes) under --results

Sections: the config fields that differ (marked `*` when they are part of the identity, i.e. change numbers),
the protocol fingerprint (seqlen, data sources, windows, calibration picks...), every metric (A, B, Δ, relative
Δ), the measured sparsity, versions, runtime (thread count, CPU capability, GPU) and timings.
"""
from __future__ import annotations

from repro.record import flatten


def changed_fields(a: dict, b: dict) -> list:
    """[(dotted field, value in a, value in b)] of the leaves that differ ('<absent>' where one lacks it)."""
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
                   changed_fields(a.get("config"), b.get("config"))],
        "protocol": [{"field": k, "a": x, "b": y} for k, x, y in changed_fields(a.get("protocol"), b.get("protocol"))],
        "metrics": metrics,
        "sparsity": {"a": (a.get("sparsity") or {}).get("overall"), "b": (b.get("sparsity") or {}).get("overall")},
        "versions": [{"field": k, "a": x, "b": y} for k, x, y in changed_fields(a.get("versions"), b.get("versions"))],
        "runtime": [{"field": k, "a": x, "b": y} for k, x, y in changed_fields(a.get("runtime"), b.get("runtime"))],
        "timings": [{"field": k, "a": x, "b": y} for k, x, y in changed_fields(a.get("timings"), b.get("timings"))],
    }


