"""The Pareto fronts of multi-objective runs (`compare.pareto.fronts`) as Markdown, figures and HTML."""
from __future__ import annotations

from repro.collect import vocab
from repro.methods._pareto import REFERENCE_RULE


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
    """[(title, Figure)]: one per two-objective setting, every method's models and its front (step line), log-log axes,
    dashed lines at the hypervolume reference point."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
        ref = next((e["reference"] for e in methods.values() if e.get("reference")), None)
        if ref:                                    # the hypervolume box: models beyond it add nothing
            ax.axvline(ref[0], color="0.5", ls="--", lw=0.8)
            ax.axhline(ref[1], color="0.5", ls="--", lw=0.8, label="HV reference point")
        for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
            scale("log")                           # perplexities span orders of magnitude (magnitude vs dense)
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
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

    from repro.collect.render.plots import figure_png_base64

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
