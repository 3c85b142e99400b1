"""A paper's cells: its layout (`tables.yaml`) and reported numbers (`reported.yaml`), loaded and cross-checked."""
from __future__ import annotations

from pathlib import Path

from repro.collect.cells.layouts import load_layout
from repro.collect.cells.reported import load_reported
from repro.collect.yamlio import DataFileError

EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"


def papers(experiments_dir: Path = EXPERIMENTS_DIR) -> list:
    return sorted(p.name for p in Path(experiments_dir).iterdir()
                  if (p / "tables.yaml").is_file() and (p / "reported.yaml").is_file())


def load_paper(paper: str, experiments_dir: Path = EXPERIMENTS_DIR) -> tuple:
    """Load and cross-check a paper's layout and reported numbers: every layout cell has exactly one reported
    entry (a value, or null + the reason), and every reported entry lands in a layout cell."""
    d = Path(experiments_dir) / paper
    if not (d / "tables.yaml").is_file() or not (d / "reported.yaml").is_file():
        raise DataFileError(d, None, "paper", paper, "one of " + ", ".join(papers(experiments_dir)),
                            f"A paper is a directory {experiments_dir}/<paper>/ with tables.yaml and reported.yaml.")
    layout = load_layout(d / "tables.yaml", paper)
    reported = load_reported(d / "reported.yaml", paper)
    cells = {(t.name, t.cell_key(r, c)) for t in layout.tables.values() for r in t.rows for c in t.columns}
    for e in reported.entries:
        if e.table not in layout.tables:
            raise DataFileError(reported.path, e.line, "table", e.table, "a table of tables.yaml: "
                                + ", ".join(layout.tables))
        if (e.table, e.key) not in cells:
            raise DataFileError(reported.path, e.line, "cell", e.key.describe(),
                                f"a cell of table {e.table!r} in {layout.path.name}",
                                "Add its row/column to the layout, or fix the entry's fields.")
    return layout, reported
