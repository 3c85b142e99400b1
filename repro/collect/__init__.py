"""The collector: run records + reported numbers + table layouts -> the papers' tables, every cell judged.

Python API (what `repro tables`, `repro diff` and notebooks/analysis.ipynb use):

    from repro.collect import load_records, build_paper, paper_markdown, paper_html, cells_frame
    recs = load_records("results")                 # ok records, deduplicated by identity
    owl = build_paper("owl", recs)                 # PaperResult: tables of Cells (mean ± std, Δ, verdict)
    cells_frame(owl)                               # one row per cell (pandas)
    recs.frame()                                   # one row per run (pandas)

The stages read in one direction, one subpackage each:

    records/  run records from disk, and what a record says of itself      (knows no paper)
    cells/    a paper's cells: keys, layouts (tables.yaml), reported numbers (reads no record values)
    compare/  records matched to cells and judged; protocol differences; Pareto fronts; two runs diffed
    render/   Markdown, LaTeX, CSV, HTML and figures of what compare/ built (computes nothing)

`vocab.py` (names, metrics, tolerances) and `yamlio.py` (line-aware YAML) serve every stage; `cli.py`
(`repro tables`, `repro diff`) and `publish.py` (`python -m repro.collect.publish`) are the entry points.
Data: experiments/<paper>/reported.yaml (cells/reported.py) and experiments/<paper>/tables.yaml (cells/layouts.py).
Docs: docs/collector.md.
"""
from repro.collect.cells.paper import load_paper, papers
from repro.collect.compare.paper import Cell, PaperResult, TableResult, build_paper
from repro.collect.compare.runs import diff_records
from repro.collect.records.load import RecordSet, load_records, resolve_run
from repro.collect.render.diff import format_diff
from repro.collect.render.text import (cells_frame, paper_csv, paper_latex, paper_markdown, table_latex,
                                       table_markdown)
from repro.collect.yamlio import DataFileError


def paper_html(result, plots: bool = True) -> str:
    from repro.collect.render.html import paper_html as _html

    return _html(result, plots=plots)


def ppl_figures(result):
    from repro.collect.render.plots import ppl_figures as _figs

    return _figs(result)


__all__ = ["Cell", "PaperResult", "TableResult", "build_paper", "cells_frame", "load_paper", "papers",
           "diff_records", "format_diff", "resolve_run", "RecordSet", "load_records", "paper_csv", "paper_latex",
           "paper_markdown", "table_latex", "table_markdown", "paper_html", "ppl_figures", "DataFileError"]
