"""The HTML report leads with what exists: summary first, the runs, the paper grid trimmed to rows/columns with a
number (an empty grid collapsed), runs on models outside the paper in their own grid; and a real headless browser
renders it (skipped where none is installed)."""
from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from test_collect import LAYOUT, REPORTED, make_record, toy_experiments, write_record
from repro.collect import build_paper, load_records, paper_html

EMPTY_TABLE = """
  t2:
    title: nothing here yet
    metric: ppl.c4
    format: ".2f"
    fixed: {sparsity: 0.7}
    model_axis: columns
    rows:
      - {label: Wanda, score: wanda}
    columns:
      - {label: L2-7B, model: llama2-7b}
"""


class _Tables(HTMLParser):
    """Each <table> as a list of rows of cell texts, plus whether it sits inside a <details>."""

    def __init__(self):
        super().__init__()
        self.tables, self._stack, self._details, self._cell = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "details":
            self._details += 1
        elif tag == "table":
            self._stack.append({"rows": [], "folded": self._details > 0})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "details":
            self._details -= 1
        elif tag == "table":
            self.tables.append(self._stack.pop())
        elif tag in ("td", "th") and self._stack:
            self._stack[-1]["rows"][-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture
def page(tmp_path):
    results = tmp_path / "results"
    for r in (make_record(score="dense", ppl=5.13), make_record(ppl=6.40),
              make_record(model="smollm2-135m", score="wanda", ppl=80.0)):      # a model outside the paper
        write_record(results, r)
    experiments = toy_experiments(tmp_path, layout=LAYOUT + EMPTY_TABLE)
    result = build_paper("toy", load_records([results]), experiments_dir=experiments)
    return paper_html(result, plots=False)


def test_report_leads_with_a_summary_of_what_exists(page):
    parser = _Tables()
    parser.feed(page)
    summary = parser.tables[0]["rows"]
    assert page.index("What exists") < page.index("<section")
    header, t1, t2 = summary
    assert header[:4] == ["table", "paper cells", "reported", "run (paper grid)"]
    # t1: 8 paper cells, 5 reported numbers, 2 run (dense + wanda on L2-7B), 1 run on another model.
    assert t1[1:4] == ["8", "5", "2"] and t1[-1] == "1"
    assert t2[1:4] == ["1", "0", "0"] and t2[-1] == "0"


def test_grids_show_only_rows_and_columns_with_numbers_and_collapse_empty_ones(page):
    parser = _Tables()
    parser.feed(page)
    visible = [t["rows"] for t in parser.tables if not t["folded"]]
    folded = [t["rows"] for t in parser.tables if t["folded"]]
    paper_grid = next(rows for rows in visible if rows[0] == ["", "L2-7B", "L2-13B"])
    assert [r[0] for r in paper_grid[1:]] == ["Dense", "Wanda", "2:4 Wanda", "Magnitude"]
    other = next(rows for rows in visible if rows[0] == ["", "smollm2-135m"])
    assert other[1:] == [["Wanda", "80.00 / ? ∅"]]                  # its own grid, only the row with a run
    # t2 has neither a reported number nor a run: one folded line, no visible grid.
    assert re.search(r"<summary[^>]*>The paper's grid: 1 cells, no reported number and no run yet", page)
    assert any(rows[0] == ["", "L2-7B"] and rows[1][0] == "Wanda" for rows in folded)


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium/Chrome installed (apt-get install chromium)")
def test_report_renders_in_a_real_browser(page, tmp_path):
    from PIL import Image

    html_file, png = tmp_path / "toy.html", tmp_path / "toy.png"
    html_file.write_text(page)
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,900", f"--screenshot={png}", html_file.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = Image.open(png).convert("RGB")
    assert img.size == (1200, 900)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    verdict_green = (0xC8, 0xE6, 0xC9)                              # the reproduced dense cell is painted
    assert len(colours) > 20 and verdict_green in colours
