"""Comparisons, the third stage: run records matched to a paper's cells and judged against the reported numbers
(`paper.py`), protocol and method-option differences (`protocol.py`), multi-objective fronts and hypervolumes
(`pareto.py`), and two runs against each other (`runs.py`). No text or figure is produced here."""
