"""Multi-objective runs in the collector (MOSP and its Extension-1 baselines): hypervolume cells and front plots.

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


def markdown(fr: dict) -> str:
    if not fr:
        return ""
    out = ["## Pareto fronts (multi-objective runs)", "",
           f"Hypervolume of each method's preference models; {REFERENCE_RULE}. Lower perplexity is better, larger "
           "HV is better; `*` marks a model on the method's own Pareto front. pass s: the one calibration pass "
           "(MOSP: every stage); models s: building all preference models (MOSP: assembly; Extension 1: "
           "pruning on H_λ); total s: the whole run, evaluation included.", ""]
    for label, methods in sorted(fr.items()):
        domains = next(iter(methods.values()))["domains"]
        out += [f"### {label}", "", "| method | HV | reference | preferences → " + " / ".join(domains)
                + " perplexity | pass s | models s | total s | peak RSS GiB |", "|---|---|---|---|---|---|---|---|"]
        for m, e in sorted(methods.items()):
            pts = "; ".join(("*" if i in e["front"] else "") + "/".join(f"{v:.2f}" for v in pt)
                            for i, pt in enumerate(e["points"]))
            hv = "" if e["hv"] is None else f"{e['hv']:.4g}"
            ref = "" if e["reference"] is None else "/".join(f"{v:.2f}" for v in e["reference"])
            num = [("" if e[k] is None else f"{e[k]:.1f}") for k in ("prune_s", "models_s", "total_s")]
            mem = "" if e["peak_rss_gib"] is None else f"{e['peak_rss_gib']:.2f}"
            out.append(f"| {m} | {hv} | {ref} | {pts} | {' | '.join(num)} | {mem} |")
        out.append("")
    return "\n".join(out) + "\n"


def figures(fr: dict) -> list:
    """[(title, Figure)]: one per two-objective setting, every method's models and its front (step line)."""
    import matplotlib
    from matplotlib.figure import Figure

    figs = []
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, methods in sorted(fr.items()):
        domains = next(iter(methods.values()))["domains"]
        if len(domains) != 2:
            continue
        fig = Figure(figsize=(5.4, 4.0))
        ax = fig.subplots()
        for i, (m, e) in enumerate(sorted(methods.items())):
            xs, ys = zip(*[(p[0], p[1]) for p in e["points"]])
            baseline = not vocab.prunes(m)
            color = "0.3" if baseline else colors[i % len(colors)]
            marker = "*" if baseline else "o"
            ax.scatter(xs, ys, color=color, marker=marker, s=60 if baseline else 22, alpha=0.6,
                       label=m + ("" if e["hv"] is None else f" (HV {e['hv']:.3g})"))
            front = sorted((e["points"][j] for j in e["front"]), key=lambda p: p[0])
            if len(front) > 1:
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=color, lw=1.2)
        ax.set_xlabel(f"{domains[0]} perplexity")
        ax.set_ylabel(f"{domains[1]} perplexity")
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        figs.append((label, fig))
    return figs


def html(fr: dict) -> str:
    """The fronts section of the HTML report: one figure per two-objective setting, then the tables."""
    import html as _html

    from repro.collect.plots import figure_png_base64

    if not fr:
        return ""
    parts = ["<h2>Pareto fronts (multi-objective runs)</h2><div class='plots'>"]
    for title, fig in figures(fr):
        parts.append(f"<img alt='{_html.escape(title)}' title='{_html.escape(title)}' "
                     f"src='data:image/png;base64,{figure_png_base64(fig)}'>")
    parts.append("</div>")
    for line in markdown(fr).splitlines()[2:]:
        if line.startswith("### "):
            parts.append(f"<h3>{_html.escape(line[4:])}</h3><table>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if cells[0] == "method" else "td"
            parts.append("<tr>" + "".join(f"<{tag}>{_html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        elif not line.strip() and parts[-1].endswith("</tr>"):
            parts.append("</table>")
        elif line.strip():
            parts.append(f"<p class='legend'>{_html.escape(line)}</p>")
    return "\n".join(parts)
