"""Plots of a filled paper: perplexity vs sparsity per method, reported (dashed, open markers) vs reproduced
(solid, filled markers, error bars = std over seeds). One figure per (model, perplexity dataset) that has at least
one number. Returned as matplotlib figures or base64 PNG (for the self-contained HTML report).
"""
from __future__ import annotations

import base64
import io

from repro.collect import vocab
from repro.collect.compare.paper import PaperResult


def ppl_points(result: PaperResult) -> dict:
    """{(model, metric): {method: {"reported": [(x, y)], "ours": [(x, y, std)]}}} over the paper's plotted
    tables; each cell key counted once. Dense is method "dense" (drawn as a horizontal line)."""
    best: dict = {}            # key -> [reported value or None, (mean, std) or None]: a key may sit in two tables
    for t in result.tables.values():
        if not t.table.plot:
            continue
        for c in t.cells:
            if not c.key.metric.startswith("ppl."):
                continue
            slot = best.setdefault(c.key, [None, None])
            if slot[0] is None and c.reported_value is not None:
                slot[0] = c.reported_value
            if slot[1] is None and c.n:
                slot[1] = (c.mean, c.std or 0.0)
    groups: dict = {}
    for key, (reported, ours) in best.items():
        method = key.method_label() + ("" if key.pattern in (None, "unstructured") else f" {key.pattern}")
        series = groups.setdefault((key.model, key.metric), {}).setdefault(method, {"reported": [], "ours": []})
        x = key.sparsity if key.sparsity is not None else 0.0
        if reported is not None:
            series["reported"].append((x, reported))
        if ours is not None:
            series["ours"].append((x, *ours))
    return {k: v for k, v in groups.items() if any(s["reported"] or s["ours"] for s in v.values())}


def ppl_figures(result: PaperResult) -> list:
    """[(title, matplotlib Figure)]."""
    import matplotlib
    from matplotlib.figure import Figure      # no pyplot: no global backend switch, safe in notebooks

    figs = []
    for (model, metric), series in sorted(ppl_points(result).items()):
        fig = Figure(figsize=(5.2, 3.6))
        ax = fig.subplots()
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        xs_all = [p[0] for s in series.values() for p in s["reported"] + s["ours"]]
        for i, (method, s) in enumerate(sorted(series.items())):
            color = colors[i % len(colors)] if vocab.prunes(method) else "0.4"
            if not vocab.prunes(method):
                for (x, y) in s["reported"]:
                    ax.axhline(y, color=color, ls="--", lw=1, label="dense (paper)")
                for (x, y, _) in s["ours"]:
                    ax.axhline(y, color=color, ls="-", lw=1, label="dense (ours)")
                continue
            if s["reported"]:
                xs, ys = zip(*sorted(s["reported"]))
                ax.plot(xs, ys, ls="--", marker="o", mfc="none", color=color, label=f"{method} (paper)")
            if s["ours"]:
                xs, ys, es = zip(*sorted(s["ours"]))
                ax.errorbar(xs, ys, yerr=es, ls="-", marker="o", color=color, capsize=3, label=f"{method} (ours)")
        lo, hi = min(xs_all), max(xs_all)
        pad = max(0.05, (0.3 - (hi - lo)) / 2)
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_ylabel(f"{metric.split('.', 1)[1]} perplexity")
        ax.set_title(f"{result.paper}: {model}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        figs.append((f"{model} — {metric}", fig))
    return figs


def figure_png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")
