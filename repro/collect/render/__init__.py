"""Renderers, the last stage: a compared paper (`compare.paper.PaperResult`) as Markdown, LaTeX and CSV
(`text.py`), a self-contained HTML page (`html.py`), figures (`plots.py`, `pareto.py`), and `repro diff`'s text."""
