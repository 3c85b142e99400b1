"""The collector: run records + reported numbers + table layouts -> the papers' tables, every cell judged.

Python API (what `repro tables`, `repro diff` and notebooks/analysis.ipynb use):

    from repro.collect import load_records, build_paper, paper_markdown, paper_html, cells_frame
    recs = load_records("results")                 # ok records, deduplicated by identity
    owl = build_paper("owl", recs)                 # PaperResult: tables of Cells (mean ± std, Δ, verdict)
    cells_frame(owl)                               # one row per cell (pandas)
    recs.frame()                                   # one row per run (pandas)

Data: experiments/<paper>/reported.yaml (reported.py) and experiments/<paper>/tables.yaml (layouts.py).
Docs: docs/collector.md.
"""
from repro.collect.compare import Cell, PaperResult, TableResult, build_paper, cells_frame, load_paper, papers
from repro.collect.diff import diff_records, format_diff, resolve_run
from repro.collect.records import RecordSet, load_records
from repro.collect.render import paper_csv, paper_latex, paper_markdown, table_latex, table_markdown
from repro.collect.yamlio import DataFileError


def paper_html(result, plots: bool = True) -> str:
    from repro.collect.html import paper_html as _html

    return _html(result, plots=plots)


def ppl_figures(result):
    from repro.collect.plots import ppl_figures as _figs

    return _figs(result)


__all__ = ["Cell", "PaperResult", "TableResult", "build_paper", "cells_frame", "load_paper", "papers",
           "diff_records", "format_diff", "resolve_run", "RecordSet", "load_records", "paper_csv", "paper_latex",
           "paper_markdown", "table_latex", "table_markdown", "paper_html", "ppl_figures", "DataFileError"]
