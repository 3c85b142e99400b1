"""Multi-objective runs in the collector (MOSP and its Extension-1 baselines): hypervolume cells and fronts
(their Markdown, figures and HTML: repro/collect/render/pareto.py).

A multi-objective record (`metrics.pareto`, repro/methods/mosp_grid.py) holds one perplexity per domain for every
preference model. The collector groups records by *setting* — model, sparsity, pattern, domains, data (hub or
stand-ins), calibration and evaluation protocol — and, per setting, takes the hypervolume reference point from
the SparseGPT Extension-1 record of that setting (`repro.methods._pareto.REFERENCE_RULE`, the research note's
reading of "tied to SparseGPT's performance"), then writes `metrics.hv.<domains>` (e.g. `hv.c4_gsm8k`) into each
record it judges, so the tables' cells select it like any metric. A setting without a SparseGPT record gets no
HV (unless the run fixed `objectives.hv_reference` itself). Records on the offline stand-ins are flagged.
"""
from __future__ import annotations

import copy
import json

from repro.collect import vocab
from repro.methods._pareto import REFERENCE_RULE, hypervolume, pareto_front, reference_point

STANDIN_NOTE = "offline stand-in domains (repro/data/domains.py), not the paper's data"


def _setting(rec: dict) -> str:
    cfg = rec.get("config") or {}
    obj = cfg.get("objectives") or {}
    key = {"model": (cfg.get("model") or {}).get("name"), "sparsity": cfg.get("sparsity"),
           "pattern": cfg.get("pattern"), "domains": [d.get("name") for d in obj.get("domains") or []],
           "standins": obj.get("standins"), "calib": {k: (cfg.get("calib") or {}).get(k)
                                                       for k in ("nsamples", "seqlen", "seed")},
           "eval": {k: ((cfg.get("eval") or {}).get("ppl") or {}).get(k) for k in ("seqlen", "max_windows")},
           "model_seqlen": (cfg.get("model") or {}).get("seqlen")}
    return json.dumps(key, sort_keys=True, default=str)


def is_multiobjective(rec: dict) -> bool:
    return "pareto" in (rec.get("metrics") or {})


def annotate(records: list) -> list:
    """Records with `metrics.hv.<domains>` and the reference point added (copies; others unchanged)."""
    groups: dict = {}
    for r in records:
        if is_multiobjective(r):
            groups.setdefault(_setting(r), []).append(r)
    out = [r for r in records if not is_multiobjective(r)]
    for recs in groups.values():
        base = next((r for r in recs if r["config"]["score"]["name"] == "sparsegpt"), None)
        for r in recs:
            r = copy.deepcopy(r)
            p = r["metrics"]["pareto"]
            obj = r["config"].get("objectives") or {}
            key = "_".join(p["domains"])
            ref, rule = None, None
            if p.get("hv") is not None:
                ref, rule = p["hv_reference"], p.get("hv_rule")
            elif base is not None and vocab.prunes(r["config"]["score"]["name"]):
                ref = reference_point(base["metrics"]["pareto"]["ppl"], obj.get("hv_factor", 1.1))
                rule = REFERENCE_RULE
            if ref is not None:
                p["hv_collected"] = {"value": hypervolume(p["ppl"], ref), "reference": ref, "rule": rule}
                r["metrics"].setdefault("hv", {})[key] = p["hv_collected"]["value"]
            if obj.get("standins"):
                r["_stand_in"] = r.get("_stand_in", []) + [STANDIN_NOTE]
            out.append(r)
    return out


def fronts(records: list) -> dict:
    """{setting label: {method: {"points": [[ppl per domain]], "front": [i], "preferences": …, "hv": …}}}; a dense
    record evaluated on the same domains joins every setting of its model as the method "dense"."""
    out, dense = {}, {}
    for r in records:
        if not is_multiobjective(r):
            continue
        cfg, p = r["config"], r["metrics"]["pareto"]
        obj = cfg.get("objectives") or {}
        hv = p.get("hv_collected") or {}
        entry = {"points": p["ppl"], "front": p.get("front") or pareto_front(p["ppl"]),
                 "preferences": p["preferences"], "hv": hv.get("value"), "reference": hv.get("reference"),
                 "domains": p["domains"], "run_dir": r.get("run_dir"),
                 "prune_s": (r.get("timings") or {}).get("prune_s"), "models_s": (r.get("timings") or {}).get("models_s"),
                 "total_s": (r.get("timings") or {}).get("total_s"),
                 "peak_rss_gib": (r.get("memory") or {}).get("peak_rss_gib")}
        key = (cfg["model"]["name"], tuple(p["domains"]), bool(obj.get("standins")))
        if not vocab.prunes(cfg["score"]["name"]):
            dense[key] = (cfg["score"]["name"], entry)
            continue
        label = (f"{cfg['model']['name']} {cfg['sparsity']:.0%} {_pattern(cfg)} — {' / '.join(p['domains'])}"
                 + (" (stand-ins)" if obj.get("standins") else ""))
        out.setdefault(label, {"_key": key})[cfg["score"]["name"]] = entry
    for methods in out.values():
        key = methods.pop("_key")
        if key in dense:
            name, entry = dense[key]
            methods[name] = entry
    return out


def _pattern(cfg: dict) -> str:
    pat = cfg.get("pattern") or {}
    return "unstructured" if pat.get("name", "unstructured") == "unstructured" else f"{pat.get('n')}:{pat.get('m')}"


