"""Text renderings of a filled paper (`compare.paper.PaperResult`): Markdown, LaTeX and CSV.

Each table is shown in the paper's layout, a cell reading `ours / paper` plus a verdict mark:
✓ reproduced, ≈ close, ✗ off, · not run, ∅ not reported (a run but no reported number); † = the run's protocol
differs from the paper's (listed under the table). "ours" is the mean over seeds, `± std` and `(n=...)` when
there are several. Markdown adds, per table, the coverage line and the list of every cell that has a run (reported,
reproduced, Δ, relative Δ, tolerance, verdict, protocol, run directories). LaTeX is one `table` float per paper
table (booktabs rules), cells `ours (paper)` with a superscript verdict letter; CSV is the long form of every cell.
"""
from __future__ import annotations

from repro.collect.compare.paper import Cell, PaperResult, TableResult

MARKS = {"reproduced": "✓", "close": "≈", "off": "✗", "not run": "·", "not reported": "∅"}
TEX_MARKS = {"reproduced": "r", "close": "c", "off": "o", "not run": "", "not reported": "n"}
LEGEND = ("cell = ours / paper; ✓ reproduced (|Δ| ≤ tolerance), ≈ close (≤ close × tolerance), ✗ off, · not run, "
          "∅ not reported (a run but no reported number), ? reported value unknown, † protocol differs; "
          "paper value * from a secondary summary, ‡ a paper number quoted in an issue thread; "
          "ours = mean ± std over seeds (n)")


def fmt(value, spec: str) -> str:
    if value is None:
        return ""
    if abs(value) >= 1e5 and spec.endswith("f"):
        return f"{value:.3g}"
    return format(value, spec)


def ours_text(cell: Cell, spec: str) -> str:
    if not cell.n:
        return "—"
    s = fmt(cell.mean, spec)
    if cell.std is not None:
        s += f" ± {fmt(cell.std, spec)}"
    return s + (f" (n={cell.n})" if cell.n > 1 else "")


STATUS_MARKS = {"secondary": "*", "quoted": "‡"}


def paper_text(cell: Cell, spec: str) -> str:
    rep = cell.reported
    if rep is None or rep.value is None:
        return "?"
    text = rep.printed or format(rep.value, spec)     # as the paper prints it, however large
    return text + STATUS_MARKS.get(rep.status, "")


def grid_text(cell: Cell, spec: str) -> str:
    return f"{ours_text(cell, spec)} / {paper_text(cell, spec)} {MARKS[cell.verdict]}" + \
        ("†" if cell.protocol_differs else "")


def _grid(t: TableResult):
    """Row labels, column labels and {(row, col): cell} in layout order (extra models last)."""
    rows, cols = [], []
    for c in t.cells:
        if c.row not in rows:
            rows.append(c.row)
        if c.column not in cols:
            cols.append(c.column)
    return rows, cols, {(c.row, c.column): c for c in t.cells}


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|")


def table_markdown(t: TableResult, paper: str = "") -> str:
    tab = t.table
    rows, cols, cells = _grid(t)
    extra_cols = {col for col in cols if all(c.extra for c in t.cells if c.column == col)}   # model columns only
    out = [f"### {paper + ' / ' if paper else ''}{tab.name}: {tab.title}", ""]
    if tab.caption:
        out += [tab.caption, ""]
    out.append(f"Layout: {tab.source or 'paper'} ({tab.layout}). Metric: "
               + ", ".join(sorted({c.key.metric for c in t.cells})) + ".")
    out.append("")
    out.append("| | " + " | ".join(_md_escape(c + (" (not in paper)" if c in extra_cols else "")) for c in cols) + " |")
    out.append("|---|" + "---|" * len(cols))
    extra_rows = {row for row in rows if all(c.extra for c in t.cells if c.row == row)}
    for r in rows:
        label = r + (" (not in paper)" if r in extra_rows else "")
        out.append(f"| {_md_escape(label)} | " + " | ".join(_md_escape(grid_text(cells[(r, c)], tab.format))
                                                     for c in cols) + " |")
    out += ["", f"*{t.coverage}*", "", f"<sub>{LEGEND}</sub>", ""]
    devs = sorted({d for c in t.cells for d in c.deviations})
    if devs:
        out += ["† protocol differences: " + "; ".join(devs), ""]
    run_cells = [c for c in t.cells if c.n]
    if run_cells:
        out += ["| row | column | paper | ours | Δ | rel Δ | tolerance | verdict | protocol | runs |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for c in run_cells:
            out.append("| " + " | ".join(_md_escape(x) for x in (
                c.row, c.column, paper_text(c, tab.format), ours_text(c, tab.format),
                "" if c.delta is None else f"{c.delta:+.4g}", "" if c.rel_delta is None else f"{c.rel_delta:+.1%}",
                "" if c.tolerance is None else f"{c.tolerance:.3g}", c.verdict,
                "; ".join(c.deviations) or "as paper", " ".join(str(d) for d in c.run_dirs))) + " |")
        out.append("")
    return "\n".join(out)


def paper_markdown(result: PaperResult) -> str:
    out = [f"# {result.title}: reproduced vs reported", ""]
    for t in result.tables.values():
        out.append(table_markdown(t, result.paper))
    if result.fronts:
        from repro.collect.render.pareto import markdown
        out.append(markdown(result.fronts))
    if result.reported.claims:
        out += ["## Reported claims that are not table cells", ""]
        for cl in result.reported.claims:
            val = "" if cl.value is None else f" — **{cl.value:g}** {cl.unit or ''}"
            out.append(f"- {cl.text}{val} [{cl.status}; {result.reported.sources[cl.source].text()}]")
        out.append("")
    out += ["## Sources", ""]
    for s in result.reported.sources.values():
        out.append(f"- `{s.id}` ({s.status}): {s.text()}" + (f" — noted in {s.seen_in}" if s.seen_in else ""))
    if result.unplaced_runs:
        out += ["", f"Runs labelled `experiment.paper={result.paper}` that fill no cell: "
                + ", ".join(result.unplaced_runs)]
    return "\n".join(out) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s)).replace("±", r"$\pm$").replace("—", "--") \
        .replace("‡", r"\ddag{}")


def tex_cell(cell: Cell, spec: str) -> str:
    ours = "--" if not cell.n else tex_escape(fmt(cell.mean, spec)) + (
        r"$\pm$" + tex_escape(fmt(cell.std, spec)) if cell.std is not None else "")
    mark = TEX_MARKS[cell.verdict] + (r"\dag" if cell.protocol_differs else "")
    return f"{ours} ({tex_escape(paper_text(cell, spec))})" + (rf"\textsuperscript{{{mark}}}" if mark else "")


def table_latex(t: TableResult, paper: str = "") -> str:
    tab = t.table
    rows, cols, cells = _grid(t)
    caption = (f"{tab.title}. Cells: ours (paper); r reproduced, c close, o off, n not reported, "
               f"\\dag{{}} protocol differs, ? unknown, * secondary source, \\ddag{{}} quoted in an issue. {t.coverage}.")
    lines = [f"% {paper}/{tab.name}: generated by `repro tables {paper}`; needs \\usepackage{{booktabs}}",
             r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{" + tex_escape(caption).replace(r"\textbackslash{}dag\{\}", r"\dag{}")
             .replace(r"\textbackslash{}ddag\{\}", r"\ddag{}") + "}",
             rf"\label{{tab:{paper}-{tab.name}}}".replace("_", "-"),
             r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
             " & ".join([""] + [tex_escape(c) for c in cols]) + r" \\", r"\midrule"]
    for r in rows:
        lines.append(" & ".join([tex_escape(r)] + [tex_cell(cells[(r, c)], tab.format) for c in cols]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def paper_latex(result: PaperResult) -> str:
    return "\n".join(table_latex(t, result.paper) for t in result.tables.values())


def paper_csv(result: PaperResult) -> str:
    return cells_frame(result).to_csv(index=False)


def cells_frame(result: PaperResult):
    """Every cell of every table as one long pandas DataFrame (what the CSV holds)."""
    import pandas as pd

    rows = []
    for t in result.tables.values():
        for c in t.cells:
            rep = c.reported
            rows.append({
                "paper": result.paper, "table": c.table, "row": c.row, "column": c.column,
                "model": c.key.model, "method": c.key.method_label(), "score": c.key.score,
                "allocation": c.key.allocation, "recovery": c.key.recovery, "pattern": c.key.pattern,
                "sparsity": c.key.sparsity, "metric": c.key.metric, "reported": c.reported_value,
                "reported_status": rep.status if rep else None, "missing_reason": rep.missing if rep else None,
                "source": rep.source if rep else None, "reproduced_mean": c.mean, "reproduced_std": c.std,
                "n_seeds": c.n, "seeds": " ".join(f"{s}/{cs}" for s, cs in c.seeds),  # run seed / calib seed
                "delta": c.delta, "rel_delta": c.rel_delta, "tolerance": c.tolerance,
                "verdict": c.verdict, "protocol_differs": c.protocol_differs,
                "protocol_deviations": "; ".join(c.deviations), "other_variants": c.other_variants,
                "extra_column": c.extra, "run_dirs": " ".join(map(str, c.run_dirs))})
    return pd.DataFrame(rows)
