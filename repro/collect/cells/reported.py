"""Reported numbers as data: `experiments/<paper>/reported.yaml`, validated on load.

    paper: owl
    title: "OWL (Yin et al., ICML 2024)"
    sources:                                   # every entry points at one of these
      readme: {cite: "luuyin/OWL README, 70% table", url: https://github.com/luuyin/OWL,
               version: "commit dddb7a4", seen_in: "shared/research/baselines_neuronal.md §e E2", status: seen}
    cells:
      - {table: readme_70, model: llama-7b, score: wanda, allocation: owl, sparsity: 0.7,
         metric: ppl.wikitext2, value: 24.55, source: readme}
      - {table: readme_70, model: [llama-30b, llama-65b], score: dsnot, sparsity: 0.7, metric: ppl.wikitext2,
         value: null, missing: "not in the README", source: readme}   # lists expand, only for null cells
    claims:                                    # reported numbers that are not a table cell (differences, ranges)
      - {id: losa-ppl-drop, text: "...", value: -68.73, source: abstract}

Cell fields: the selector (`keys.py`: model, score, allocation=uniform, recovery=none, pattern=unstructured,
sparsity, metric, config.<path>), `value` (a number, or null with a `missing` reason), `source`, optional
`status` (seen | quoted | secondary; default: the source's), `note`, `printed` (the number as printed, e.g. "5.6e2")
and `resolution` (the printed precision, e.g. 10 for 5.6e2; half of it widens the tolerance).
Any mistake raises DataFileError with the file and line.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from repro.collect import vocab
from repro.collect.cells.keys import CORE_FIELDS, CellKey, check_selector, make_key
from repro.collect.yamlio import DataFileError, LinedDict, load_yaml

STATUSES = ("seen", "quoted", "secondary", "unseen")   # unseen: where the number is, not yet read
_TOP_KEYS = ("paper", "title", "sources", "cells", "claims")
_SOURCE_KEYS = ("cite", "url", "version", "where", "page", "seen_in", "status", "note")
_CELL_KEYS = ("table", "value", "source", "status", "note", "missing", "printed", "resolution")
_CLAIM_KEYS = ("id", "text", "value", "unit", "source", "status", "note")


@dataclass
class Source:
    id: str
    cite: str
    status: str
    url: Optional[str] = None
    version: Optional[str] = None
    where: Optional[str] = None
    page: Optional[str] = None
    seen_in: Optional[str] = None
    note: Optional[str] = None

    def text(self) -> str:
        bits = [self.cite] + [b for b in (self.version and f"version {self.version}", self.where,
                                          self.page and f"p. {self.page}", self.url) if b]
        return "; ".join(bits)


@dataclass
class ReportedEntry:
    table: str
    key: CellKey
    value: Optional[float]
    source: str
    status: str
    line: int
    missing: Optional[str] = None
    note: Optional[str] = None
    printed: Optional[str] = None
    resolution: Optional[float] = None


@dataclass
class Claim:
    id: str
    text: str
    value: Optional[float]
    source: str
    status: str
    line: int
    unit: Optional[str] = None
    note: Optional[str] = None


@dataclass
class ReportedSet:
    paper: str
    title: str
    path: Path
    sources: dict = field(default_factory=dict)
    entries: list = field(default_factory=list)
    claims: list = field(default_factory=list)

    def by_key(self) -> dict:
        return {(e.table, e.key): e for e in self.entries}


def _check_keys(node, allowed, path, where):
    if not isinstance(node, dict):
        raise DataFileError(path, getattr(node, "line", None), where, node, "a mapping")
    for k in node:
        if k not in allowed and not (where.startswith("cells") and (k in CORE_FIELDS or str(k).startswith("config."))):
            raise DataFileError(path, node.line_of(k) if isinstance(node, LinedDict) else None, f"{where}.{k}", k,
                                "one of " + ", ".join(allowed + (CORE_FIELDS if where.startswith("cells") else ())))


def _text(node, key, path, where, required=True):
    v = node.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip():
        raise DataFileError(path, node.line_of(key), f"{where}.{key}", v, "a non-empty string")
    return v


def _number(node, key, path, where):
    v = node.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DataFileError(path, node.line_of(key), f"{where}.{key}", v, "a number or null",
                            "YAML reads 5.6e2 as a string: write 5.6e+2 (and printed: \"5.6e2\").")
    return float(v)


def _load_source(sid, node, path) -> Source:
    where = f"sources.{sid}"
    _check_keys(node, _SOURCE_KEYS, path, where)
    status = node.get("status", "seen")
    if status not in STATUSES:
        raise DataFileError(path, node.line_of("status"), f"{where}.status", status, "one of " + ", ".join(STATUSES))
    return Source(id=sid, cite=_text(node, "cite", path, where), status=status,
                  **{k: (None if node.get(k) is None else str(node.get(k)))
                     for k in ("url", "version", "where", "page", "seen_in", "note")})


def _status(node, sources, path, where):
    sid = _text(node, "source", path, where)
    if sid not in sources:
        raise DataFileError(path, node.line_of("source"), f"{where}.source", sid,
                            "the id of an entry under `sources:` (" + ", ".join(sources) + ")")
    status = node.get("status", sources[sid].status)
    if status not in STATUSES:
        raise DataFileError(path, node.line_of("status"), f"{where}.status", status, "one of " + ", ".join(STATUSES))
    return sid, status


def _load_cells(node, i, sources, path) -> list:
    where = f"cells[{i}]"
    _check_keys(node, _CELL_KEYS, path, where)
    table = _text(node, "table", path, where)
    sid, status = _status(node, sources, path, where)
    value = _number(node, "value", path, where)
    missing = _text(node, "missing", path, where, required=False)
    if value is None and not missing:
        raise DataFileError(path, node.line, f"{where}.missing", None, "a reason why the value is unknown",
                            "An empty cell is written `value: null` with `missing: <why>`; never guess a number.")
    if value is not None and status == "unseen":
        raise DataFileError(path, node.line_of("value"), f"{where}.value", value,
                            "null: the source is marked unseen", "Mark the source seen/quoted/secondary.")
    if value is not None and missing:
        raise DataFileError(path, node.line_of("missing"), f"{where}.missing", missing, "no `missing` with a value")
    sel = check_selector(node, path, where, ignore=_CELL_KEYS)
    for req in ("model", "score", "metric"):
        if req not in sel:
            raise DataFileError(path, node.line, f"{where}.{req}", None, f"a `{req}` for every cell")
    scores = sel["score"] if isinstance(sel["score"], list) else [sel["score"]]
    if any(map(vocab.prunes, scores)) and "sparsity" not in sel:
        raise DataFileError(path, node.line, f"{where}.sparsity", None, "a sparsity for every non-dense cell")
    listed = {k: v for k, v in sel.items() if isinstance(v, list)}
    if listed and value is not None:
        raise DataFileError(path, node.line_of(next(iter(listed))), f"{where}.{next(iter(listed))}",
                            listed[next(iter(listed))], "a single value: lists only expand empty (null) cells")
    out = []
    for combo in itertools.product(*listed.values()) if listed else [()]:
        fields = {**sel, **dict(zip(listed, combo))}
        out.append(ReportedEntry(table=table, key=make_key(fields), value=value, source=sid, status=status,
                                 line=node.line, missing=missing, note=node.get("note"),
                                 printed=None if node.get("printed") is None else str(node.get("printed")),
                                 resolution=_number(node, "resolution", path, where)))
    return out


def load_reported(path: str | Path, paper: Optional[str] = None) -> ReportedSet:
    """Load and validate one reported.yaml. Raises DataFileError (file:line) on any mistake."""
    path = Path(path)
    doc = load_yaml(path)
    _check_keys(doc, _TOP_KEYS, path, "(top level)")
    name = _text(doc, "paper", path, "(top level)")
    if paper is not None and name != paper:
        raise DataFileError(path, doc.line_of("paper"), "paper", name, f"{paper!r} (the directory name)")
    srcs = doc.get("sources") or {}
    if not isinstance(srcs, dict) or not srcs:
        raise DataFileError(path, doc.line_of("sources"), "sources", srcs, "a mapping id -> {cite, ...}")
    sources = {sid: _load_source(sid, node, path) for sid, node in srcs.items()}
    out = ReportedSet(paper=name, title=doc.get("title") or name, path=path, sources=sources)
    seen = {}
    for i, node in enumerate(doc.get("cells") or []):
        for entry in _load_cells(node, i, sources, path):
            k = (entry.table, entry.key)
            if k in seen:
                raise DataFileError(path, entry.line, f"cells[{i}]", entry.key.describe(), "each cell once per table",
                                    f"The same cell is on line {seen[k]}.")
            seen[k] = entry.line
            out.entries.append(entry)
    for i, node in enumerate(doc.get("claims") or []):
        where = f"claims[{i}]"
        _check_keys(node, _CLAIM_KEYS, path, where)
        sid, status = _status(node, sources, path, where)
        if node.get("value") is not None and status == "unseen":
            raise DataFileError(path, node.line_of("value"), f"{where}.value", node.get("value"),
                                "null: the source is marked unseen", "Mark the source seen/quoted/secondary.")
        out.claims.append(Claim(id=_text(node, "id", path, where), text=_text(node, "text", path, where),
                                value=_number(node, "value", path, where), source=sid, status=status,
                                line=node.line, unit=node.get("unit"), note=node.get("note")))
    return out
