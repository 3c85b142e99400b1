"""The reported numbers in experiments/*/reported.yaml: schema, provenance, traceability to the research notes,
coverage of every layout cell, and clear file:line errors for malformed files."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from repro.collect import load_paper, papers
from repro.collect.cells.reported import load_reported
from repro.collect.yamlio import DataFileError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REPRO_SHARED", REPO.parent / "shared"))
PAPERS = papers()


def test_every_paper_is_encoded():
    assert set(PAPERS) >= {"neuronal", "owl", "wanda", "dsnot", "lua_llm", "losa", "mosp", "restorelcc"}


@pytest.mark.parametrize("paper", PAPERS)
def test_every_layout_cell_has_exactly_one_entry(paper):
    """Unknown cells are present (null + missing reason), so coverage is visible; nothing outside the layout."""
    layout, reported = load_paper(paper)
    cells = {(t.name, t.cell_key(r, c)) for t in layout.tables.values() for r in t.rows for c in t.columns}
    entries = {(e.table, e.key) for e in reported.entries}
    assert cells == entries
    for e in reported.entries:
        assert (e.value is None) == bool(e.missing)


@pytest.mark.parametrize("paper", PAPERS)
def test_every_entry_names_a_source(paper):
    _, reported = load_paper(paper)
    for item in reported.entries + reported.claims:
        src = reported.sources[item.source]
        assert src.cite.strip()
        if item.value is not None:
            assert item.status != "unseen" and src.seen_in, (paper, item.line)


def _literal(path: Path, line: int) -> str:
    """The value as written in the YAML (4.10, not 4.1), from the entry's own lines."""
    text = "\n".join(path.read_text().splitlines()[line - 1:line + 3])
    m = re.search(r"printed: \"([^\"]+)\"", text) or re.search(r"value: ([-+0-9.e]+)", text)
    return m.group(1).lstrip("-+")


@pytest.mark.parametrize("paper", PAPERS)
def test_every_number_is_in_the_note_it_cites(paper):
    """Each number, as printed in reported.yaml, occurs in the research note or seed its source points at."""
    if not (SHARED / "research").is_dir():
        pytest.skip(f"research notes not available at {SHARED} (set REPRO_SHARED)")
    _, reported = load_paper(paper)
    checked = 0
    for item in reported.entries + reported.claims:
        if item.value is None:
            continue
        notes = re.findall(r"shared/((?:research|seeds)/[\w.]+)", reported.sources[item.source].seen_in)
        assert notes, (paper, item.line)
        literal = _literal(reported.path, item.line)
        texts = [(SHARED / n).read_text() for n in notes]
        assert any(literal in t for t in texts), f"{reported.path}:{item.line}: {literal} not in {notes}"
        checked += 1
    assert checked == sum(x.value is not None for x in reported.entries + reported.claims)


GOOD = """\
paper: toy
sources:
  s: {cite: "Toy paper, Table 1, p. 3", status: seen, seen_in: "a note"}
  u: {cite: "Toy paper, Table 2 (not read)", status: unseen}
cells:
  - {table: t1, model: llama2-7b, score: wanda, sparsity: 0.5, metric: ppl.wikitext2, value: 6.42, source: s}
"""


@pytest.mark.parametrize("edit, line, message", [
    (("score: wanda", "score: wandaa"), 6, "`cells[0].score` = 'wandaa'. Expected one of dense, magnitude, wanda"),
    ((", source: s}", "}"), 6, "`cells[0].source` = None. Expected a non-empty string"),
    (("source: s}", "source: nope}"), 6, "the id of an entry under `sources:`"),
    (("value: 6.42", "value: 5.6e2"), 6, "YAML reads 5.6e2 as a string"),
    (("model: llama2-7b", "model: [llama2-7b, llama2-13b]"), 6, "lists only expand empty (null) cells"),
    (("value: 6.42, source: s", "value: 6.42, source: u"), 6, "the source is marked unseen"),
    (("value: 6.42", "value: null"), 6, "a reason why the value is unknown"),
    (("metric: ppl.wikitext2", "metric: ppl.wikitext3"), 6, "`cells[0].metric` = 'ppl.wikitext3'"),
    (("sparsity: 0.5", "sparsity: 50"), 6, "a fraction in [0, 1)"),
    (("  u: {", "  s: {"), 4, "each key once per mapping"),
    (("cells:", "cels:"), 5, "`(top level).cels`"),
    (("status: seen,", "status: maybe,"), 3, "one of seen, quoted, secondary, unseen"),
])
def test_malformed_reported_file_names_file_and_line(tmp_path, edit, line, message):
    path = tmp_path / "reported.yaml"
    path.write_text(GOOD.replace(*edit, 1))
    with pytest.raises(DataFileError) as e:
        load_reported(path)
    assert str(e.value).startswith(f"{path}:{line}: ") and message in str(e.value)


def test_duplicate_cell_and_good_file(tmp_path):
    path = tmp_path / "reported.yaml"
    path.write_text(GOOD)
    rep = load_reported(path, "toy")
    assert [(e.value, e.source, e.status, e.key.allocation) for e in rep.entries] == [(6.42, "s", "seen", "uniform")]
    path.write_text(GOOD + GOOD.splitlines()[-1] + "\n")
    with pytest.raises(DataFileError, match=r"reported.yaml:7: .*The same cell is on line 6"):
        load_reported(path)
    path.write_text(GOOD + "  - {table: t1, model: llama2-7b, score: wanda, metric: ppl.wikitext2, value: 1.0, source: s\n")
    with pytest.raises(DataFileError, match=r"reported.yaml:\d+: .*valid YAML syntax"):
        load_reported(path)
