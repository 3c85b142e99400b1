"""Cells, the second stage: what a paper's tables are made of — cell keys (`keys.py`), the layouts of
`tables.yaml` (`layouts.py`) and the reported numbers of `reported.yaml` (`reported.py`), loaded and cross-checked
per paper (`paper.py`). Nothing here reads a run record's values."""
