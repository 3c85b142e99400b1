"""One self-contained HTML report per paper: every table in the paper's layout (cells coloured by verdict, the
details in a tooltip), the coverage line, the protocol differences, the compared cells, the perplexity-vs-sparsity
plots (embedded base64 PNG, no external file), the reported claims and the sources.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone

from repro.collect.compare import PaperResult, TableResult
from repro.collect.plots import figure_png_base64, ppl_figures
from repro.collect.render import LEGEND, MARKS, _grid, grid_text, ours_text, paper_text

COLORS = {"reproduced": "#c8e6c9", "close": "#fff3b0", "off": "#ffcdd2", "not run": "#ffffff",
          "not reported": "#e3f2fd"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:center;white-space:nowrap}
th{background:#f0f0f0} td.row{text-align:left;font-weight:600;background:#fafafa}
.extra{font-style:italic} .legend{font-size:12px;color:#555} .coverage{font-weight:600}
.plots img{margin:4px;border:1px solid #ddd} details{margin-bottom:1em} code{background:#f4f4f4;padding:0 3px}
"""


def _e(s) -> str:
    return html.escape(str(s))


def _table_html(t: TableResult) -> str:
    tab = t.table
    rows, cols, cells = _grid(t)
    extra = {c.column for c in t.cells if c.extra} | {c.row for c in t.cells if c.extra}
    out = [f"<h3 id='{_e(tab.name)}'>{_e(tab.name)}: {_e(tab.title)}</h3>"]
    if tab.caption:
        out.append(f"<p>{_e(tab.caption)}</p>")
    out.append(f"<p class='legend'>Layout: {_e(tab.source or 'paper')} ({_e(tab.layout)}). "
               "Protocol assumed: <code>" + _e(", ".join(f"{k}={v}" for k, v in tab.protocol.items()) or "not stated")
               + "</code></p>")
    out.append("<table><tr><th></th>" + "".join(
        f"<th class='{'extra' if c in extra else ''}'>{_e(c)}{' (not in paper)' if c in extra else ''}</th>"
        for c in cols) + "</tr>")
    for r in rows:
        tds = []
        for c in cols:
            cell = cells[(r, c)]
            tip = [f"paper: {paper_text(cell, tab.format)} [{cell.reported.status}: {cell.reported.source}]"
                   if cell.reported and cell.reported.value is not None else
                   f"paper: unknown ({cell.reported.missing})" if cell.reported else "paper: no entry",
                   f"ours: {ours_text(cell, tab.format)}", f"verdict: {cell.verdict}"]
            if cell.delta is not None:
                tip.append(f"Δ {cell.delta:+.4g} ({cell.rel_delta:+.1%}), tolerance {cell.tolerance:.3g}")
            if cell.deviations:
                tip.append("protocol differs: " + "; ".join(cell.deviations))
            if cell.run_dirs:
                tip.append("runs: " + " ".join(map(str, cell.run_dirs)))
            tds.append(f"<td style='background:{COLORS[cell.verdict]}' title='{_e(chr(10).join(tip))}'>"
                       f"{_e(grid_text(cell, tab.format))}</td>")
        out.append(f"<tr><td class='row'>{_e(r)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    out.append(f"<p class='coverage'>{_e(t.coverage)}</p>")
    devs = sorted({d for c in t.cells for d in c.deviations})
    if devs:
        out.append("<p>† protocol differences: " + _e("; ".join(devs)) + "</p>")
    run_cells = [c for c in t.cells if c.n]
    if run_cells:
        out.append("<details><summary>compared cells</summary><table><tr>" + "".join(
            f"<th>{h}</th>" for h in ("row", "column", "paper", "ours", "Δ", "rel Δ", "tolerance", "verdict",
                                      "protocol", "runs")) + "</tr>")
        for c in run_cells:
            vals = (c.row, c.column, paper_text(c, tab.format), ours_text(c, tab.format),
                    "" if c.delta is None else f"{c.delta:+.4g}", "" if c.rel_delta is None else f"{c.rel_delta:+.1%}",
                    "" if c.tolerance is None else f"{c.tolerance:.3g}", f"{MARKS[c.verdict]} {c.verdict}",
                    "; ".join(c.deviations) or "as paper", " ".join(map(str, c.run_dirs)))
            out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in vals) + "</tr>")
        out.append("</table></details>")
    return "\n".join(out)


def paper_html(result: PaperResult, plots: bool = True) -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    n_runs = len(result.records) if result.records is not None else None
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{_e(result.title)}: reproduced vs reported</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(result.title)}: reproduced vs reported</h1>",
             f"<p class='legend'>Generated {now} by <code>repro tables {_e(result.paper)} --format html</code>"
             + (f" from {n_runs} run records" if n_runs is not None else "") + f". {_e(LEGEND)}</p>",
             "<ul>" + "".join(f"<li><a href='#{_e(n)}'>{_e(n)}</a>: {_e(t.coverage)}</li>"
                              for n, t in result.tables.items()) + "</ul>"]
    for t in result.tables.values():
        parts.append(_table_html(t))
    if plots:
        figs = ppl_figures(result)
        parts.append("<h2>Perplexity vs sparsity</h2>")
        if figs:
            parts.append("<div class='plots'>" + "".join(
                f"<img alt='{_e(title)}' title='{_e(title)}' src='data:image/png;base64,{figure_png_base64(fig)}'>"
                for title, fig in figs) + "</div>")
        else:
            parts.append("<p>No perplexity number (reported or reproduced) to plot.</p>")
    if result.reported.claims:
        parts.append("<h2>Reported claims that are not table cells</h2><ul>")
        for cl in result.reported.claims:
            val = "" if cl.value is None else f" — <b>{cl.value:g}</b> {_e(cl.unit or '')}"
            parts.append(f"<li>{_e(cl.text)}{val} <span class='legend'>[{_e(cl.status)}: "
                         f"{_e(result.reported.sources[cl.source].text())}]</span></li>")
        parts.append("</ul>")
    parts.append("<h2>Sources</h2><ul>")
    for s in result.reported.sources.values():
        parts.append(f"<li><code>{_e(s.id)}</code> ({_e(s.status)}): {_e(s.text())}"
                     + (f" — noted in {_e(s.seen_in)}" if s.seen_in else "") + "</li>")
    parts.append("</ul>")
    if result.unplaced_runs:
        parts.append("<p>Runs of this paper's experiments that fill no cell: "
                     + _e(", ".join(result.unplaced_runs)) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
