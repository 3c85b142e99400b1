"""One self-contained HTML report per paper, led by what exists.

The page opens with a summary of every table (cells run, cells with a reported number, verdicts, runs on models
outside the paper's grid). Each table then shows, in this order: the cells that have a run (ours vs paper, Δ,
tolerance, verdict, protocol, run directories); the paper's grid trimmed to the rows and columns that hold a
number (reported or ours; the full grid folds out, and a grid with nothing in it is collapsed to one line); and
the runs on models the paper did not evaluate (the embedded model, a user's checkpoint) in a grid of their own.
Cells are coloured by verdict with the details in a tooltip. Then the perplexity-vs-sparsity plots (embedded
base64 PNG, no external file), the reported claims and the sources. Escaping is `html.escape` throughout.
"""
from __future__ import annotations

import html

from repro.collect.compare.paper import Cell, PaperResult, TableResult
from repro.collect.render.plots import figure_png_base64, ppl_figures
from repro.collect.render.text import LEGEND, MARKS, _grid, grid_text, ours_text, paper_text

COLORS = {"reproduced": "#c8e6c9", "close": "#fff3b0", "off": "#ffcdd2", "not run": "#ffffff",
          "not reported": "#e3f2fd"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:center;white-space:nowrap}
th{background:#f0f0f0} td.row{text-align:left;font-weight:600;background:#fafafa}
td.num{text-align:right} td.wrap{white-space:normal;text-align:left;max-width:380px;font-size:12px} .legend{font-size:12px;color:#555} .empty{color:#777}
.plots img{margin:4px;border:1px solid #ddd} details{margin-bottom:1em} code{background:#f4f4f4;padding:0 3px}
section.table{border-top:2px solid #ddd;margin-top:1.5em}
"""
RUN_COLUMNS = ("row", "column", "paper", "ours", "Δ", "rel Δ", "tolerance", "verdict", "protocol", "runs")


def _e(s) -> str:
    return html.escape(str(s))


def has_number(cell: Cell) -> bool:
    """A cell worth showing: a reported number or a run of ours."""
    return cell.reported_value is not None or cell.n > 0


def table_summary(t: TableResult) -> dict:
    paper = [c for c in t.cells if not c.extra]
    counts = t.counts()
    return {"cells": len(paper), "reported": sum(c.reported_value is not None for c in paper),
            "run": sum(c.n > 0 for c in paper), "other_models": sum(c.n > 0 for c in t.cells if c.extra),
            **{v: counts[v] for v in ("reproduced", "close", "off")}}


def _summary_html(result: PaperResult) -> str:
    head = ("table", "paper cells", "reported", "run (paper grid)", "✓ reproduced", "≈ close", "✗ off",
            "runs on other models")
    out = ["<h2>What exists</h2><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for name, t in result.tables.items():
        s = table_summary(t)
        vals = (s["cells"], s["reported"], s["run"], s["reproduced"], s["close"], s["off"], s["other_models"])
        out.append(f"<tr><td class='row wrap'><a href='#{_e(name)}'>{_e(name)}</a>: {_e(t.table.title)}</td>"
                   + "".join(f"<td class='num'>{v}</td>" for v in vals) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _tooltip(cell: Cell, spec: str) -> str:
    rep = cell.reported
    tip = [f"paper: {paper_text(cell, spec)} [{rep.status}: {rep.source}]" if rep and rep.value is not None else
           f"paper: unknown ({rep.missing})" if rep else "paper: no entry",
           f"ours: {ours_text(cell, spec)}", f"verdict: {cell.verdict}"]
    if cell.delta is not None:
        tip.append(f"Δ {cell.delta:+.4g} ({cell.rel_delta:+.1%}), tolerance {cell.tolerance:.3g}")
    if cell.deviations:
        tip.append("protocol differs: " + "; ".join(cell.deviations))
    if cell.run_dirs:
        tip.append("runs: " + " ".join(map(str, cell.run_dirs)))
    return "\n".join(tip)


def _grid_html(cells: list, spec: str) -> str:
    rows, cols, by_pos = _grid(TableResult(table=None, cells=cells))
    out = ["<table><tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"]
    for r in rows:
        tds = "".join(f"<td style='background:{COLORS[by_pos[(r, c)].verdict]}' "
                      f"title='{_e(_tooltip(by_pos[(r, c)], spec))}'>{_e(grid_text(by_pos[(r, c)], spec))}</td>"
                      for c in cols)
        out.append(f"<tr><td class='row'>{_e(r)}</td>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _trim(cells: list) -> list:
    """The cells of the rows and columns that hold at least one number."""
    rows = {c.row for c in cells if has_number(c)}
    cols = {c.column for c in cells if has_number(c)}
    return [c for c in cells if c.row in rows and c.column in cols]


def _runs_html(t: TableResult) -> str:
    run_cells = [c for c in t.cells if c.n]
    if not run_cells:
        return "<p class='empty'>No run fills a cell of this table yet.</p>"
    spec = t.table.format
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in RUN_COLUMNS) + "</tr>"]
    for c in run_cells:
        vals = (c.row, c.column + (" (not in paper)" if c.extra else ""), paper_text(c, spec), ours_text(c, spec),
                "" if c.delta is None else f"{c.delta:+.4g}", "" if c.rel_delta is None else f"{c.rel_delta:+.1%}",
                "" if c.tolerance is None else f"{c.tolerance:.3g}", f"{MARKS[c.verdict]} {c.verdict}",
                "; ".join(c.deviations) or "as paper", " ".join(map(str, c.run_dirs)))
        out.append(f"<tr style='background:{COLORS[c.verdict]}'>" + "".join(
            f"<td{' class=wrap' if i >= len(vals) - 2 else ''}>{_e(v)}</td>" for i, v in enumerate(vals)) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _paper_grid_html(t: TableResult) -> str:
    paper_cells = [c for c in t.cells if not c.extra]
    spec = t.table.format
    full = _grid_html(paper_cells, spec)
    shown = _trim(paper_cells)
    if not shown:
        return (f"<details><summary class='empty'>The paper's grid: {len(paper_cells)} cells, no reported number "
                f"and no run yet (show the empty grid)</summary>{full}</details>")
    out = ["<h4>The paper's grid</h4>", _grid_html(shown, spec)]
    if len(shown) < len(paper_cells):
        out.append(f"<details><summary class='legend'>{len(paper_cells) - len(shown)} more cells in rows or "
                   f"columns with no number (show the full grid)</summary>{full}</details>")
    return "\n".join(out)


def _other_models_html(t: TableResult) -> str:
    extra = _trim([c for c in t.cells if c.extra])
    if not extra:
        return ""
    return ("<h4>Models outside the paper's grid</h4><p class='legend'>Runs on models the paper did not evaluate "
            "(no reported number to compare with).</p>" + _grid_html(extra, t.table.format))


def _table_html(t: TableResult) -> str:
    tab = t.table
    out = [f"<section class='table'><h3 id='{_e(tab.name)}'>{_e(tab.name)}: {_e(tab.title)}</h3>"]
    if tab.caption:
        out.append(f"<p>{_e(tab.caption)}</p>")
    out.append(f"<p class='legend'>{_e(t.coverage)}. Layout: {_e(tab.source or 'paper')} ({_e(tab.layout)}). "
               "Protocol assumed: <code>" + _e(", ".join(f"{k}={v}" for k, v in tab.protocol.items()) or "not stated")
               + "</code></p>")
    out.append(_runs_html(t))
    out.append(_paper_grid_html(t))
    out.append(_other_models_html(t))
    devs = sorted({d for c in t.cells for d in c.deviations})
    if devs:
        out.append("<p>† protocol differences: " + _e("; ".join(devs)) + "</p>")
    out.append("</section>")
    return "\n".join(out)


def paper_html(result: PaperResult, plots: bool = True) -> str:
    recs = result.records.records if result.records is not None else None
    newest = max((str(r.get("finished_at", "")) for r in recs or []), default="")
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>{_e(result.title)}: reproduced vs reported</title><style>{CSS}</style></head><body>",
             f"<h1>{_e(result.title)}: reproduced vs reported</h1>",
             f"<p class='legend'>Generated by <code>repro tables {_e(result.paper)} --format html</code>"
             + (f" from {len(recs)} run records (newest finished {_e(newest or '?')})" if recs is not None else "")
             + f". {_e(LEGEND)}</p>",
             _summary_html(result)]
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
            parts.append("<p class='empty'>No perplexity number (reported or reproduced) to plot.</p>")
    if result.fronts:
        from repro.collect.render.pareto import html as fronts_html
        parts.append(fronts_html(result.fronts))
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
