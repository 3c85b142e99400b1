"""Paper table layouts: `experiments/<paper>/tables.yaml`, validated on load.

    paper: owl
    protocol: {seqlen: 2048, ppl_source: hub, ppl_all_windows: true, calib: c4, calib_nsamples: 128}
    tolerances: {ppl: {rel: 0.02}}            # overrides repro.collect.vocab.DEFAULT_TOLERANCES
    tables:
      readme_70:
        title: "WikiText-2 perplexity at 70% unstructured sparsity"
        source: "OWL README"                  # where the layout comes from; `layout: reconstructed` if guessed
        metric: ppl.wikitext2
        format: ".2f"
        fixed: {sparsity: 0.7}
        model_axis: columns                   # models with runs but no column get one (cells "not reported")
        rows:
          - {label: Dense, score: dense}
          - {label: OWL w. Wanda, score: wanda, allocation: owl}
        columns:
          model: [llama-7b, llama-13b]        # shorthand: one entry per value, labelled by the value

Each cell's selector is `fixed` + its row + its column (see `keys.py`); it must name a model, a score, a metric and,
unless dense, a sparsity. Unknown fields, choices or protocol checks fail with the file and line.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from repro.collect import vocab
from repro.collect.cells.keys import CellKey, check_selector, make_key
from repro.collect.records.protocol import CHECKS
from repro.collect.yamlio import DataFileError, LinedDict, load_yaml

_TOP = ("paper", "title", "protocol", "method_options", "tolerances", "tables", "pareto_fronts")
_TABLE = ("title", "caption", "source", "layout", "metric", "format", "fixed", "protocol", "method_options",
          "model_axis", "rows", "columns", "plot", "note")
LAYOUT_KINDS = ("as-published", "reconstructed")


@dataclass
class AxisItem:
    label: str
    select: dict
    extra: bool = False        # appended by the collector (a model with runs but no column in the paper)


@dataclass
class Table:
    name: str
    title: str
    rows: list
    columns: list
    fixed: dict
    protocol: dict
    method_options: dict = field(default_factory=dict)   # {"allocation.owl.clamp": "neuronal"}: what the paper ran
    format: str = ".2f"
    caption: str = ""
    source: str = ""
    layout: str = "as-published"
    model_axis: Optional[str] = None
    plot: bool = True
    note: str = ""
    line: Optional[int] = None

    def cell_key(self, row: AxisItem, col: AxisItem) -> CellKey:
        return make_key({**self.fixed, **row.select, **col.select})


@dataclass
class Layout:
    paper: str
    title: str
    path: Path
    tables: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    pareto_fronts: bool = False      # show the multi-objective runs' fronts (repro/collect/compare/pareto.py)


def _axis(node, path, where) -> list:
    if isinstance(node, dict) and node and all(isinstance(v, list) for v in node.values()):
        check_selector(node, path, where)       # {field: [values], ...}: the product, labelled "v1 / v2"
        combos = itertools.product(*node.values())
        return [AxisItem(label=" / ".join(_short(v) for v in combo), select=dict(zip(node, combo)))
                for combo in combos]
    if not isinstance(node, list) or not node:
        raise DataFileError(path, getattr(node, "line", None), where, node,
                            "a list of {label, <selector fields>} or {field: [values]}")
    items = []
    for i, item in enumerate(node):
        if not isinstance(item, LinedDict) or not isinstance(item.get("label"), str):
            raise DataFileError(path, getattr(item, "line", None), f"{where}[{i}].label", item,
                                "a mapping with a string `label`")
        sel = check_selector(item, path, f"{where}[{i}]")
        bad = [k for k, v in sel.items() if isinstance(v, list)]
        if bad:
            raise DataFileError(path, item.line_of(bad[0]), f"{where}[{i}].{bad[0]}", sel[bad[0]], "a single value")
        items.append(AxisItem(label=item["label"], select=sel))
    return items


def _short(v) -> str:
    return f"{v:.0%}" if isinstance(v, float) else str(v)


def check_protocol(node, path, where) -> dict:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise DataFileError(path, None, where, node, "a mapping of protocol checks")
    for k in node:
        if k not in CHECKS:
            raise DataFileError(path, node.line_of(k), f"{where}.{k}", k, "one of " + ", ".join(CHECKS))
    return dict(node)


def check_method_options(node, path, where) -> dict:
    """`{<kind>.<method>.<field>: value}`: the method settings the paper ran (judged, not selected)."""
    kinds = {"score": vocab.SCORES, "allocation": vocab.ALLOCATIONS, "recovery": vocab.RECOVERIES}
    for k in node or {}:
        parts = str(k).split(".")
        if len(parts) != 3 or parts[0] not in kinds or parts[1] not in kinds[parts[0]]:
            raise DataFileError(path, node.line_of(k) if isinstance(node, LinedDict) else None, f"{where}.{k}", k,
                                "<kind>.<method>.<field> with kind score/allocation/recovery and a known method",
                                "e.g. allocation.owl.clamp: neuronal")
    return dict(node or {})


def check_tolerances(node, path, where) -> dict:
    out = {}
    for fam, tol in (node or {}).items():
        line = node.line_of(fam) if isinstance(node, LinedDict) else None
        if fam not in vocab.DEFAULT_TOLERANCES:
            raise DataFileError(path, line, f"{where}.{fam}", fam, "one of " + ", ".join(vocab.DEFAULT_TOLERANCES))
        if not isinstance(tol, dict) or any(k not in ("abs", "rel", "close") or isinstance(v, bool)
                                            or not isinstance(v, (int, float)) or v < 0 for k, v in tol.items()):
            raise DataFileError(path, line, f"{where}.{fam}", tol, "{abs: >=0, rel: >=0, close: >=1} (numbers)")
        out[fam] = dict(tol)
    return out


def _table(name, node, base_protocol, path, base_options=None) -> Table:
    where = f"tables.{name}"
    if not isinstance(node, LinedDict):
        raise DataFileError(path, None, where, node, "a mapping")
    for k in node:
        if k not in _TABLE:
            raise DataFileError(path, node.line_of(k), f"{where}.{k}", k, "one of " + ", ".join(_TABLE))
    fixed = check_selector(node.get("fixed") or LinedDict(), path, f"{where}.fixed")
    if "metric" in node:
        fixed = {**fixed, **check_selector(LinedDict(metric=node["metric"]), path, where)}
    layout = node.get("layout", "as-published")
    if layout not in LAYOUT_KINDS:
        raise DataFileError(path, node.line_of("layout"), f"{where}.layout", layout, "one of " + ", ".join(LAYOUT_KINDS))
    axis = node.get("model_axis")
    if axis not in (None, "rows", "columns"):
        raise DataFileError(path, node.line_of("model_axis"), f"{where}.model_axis", axis, "rows, columns or null")
    fmt = node.get("format", ".2f")
    try:
        format(1.5, fmt)
    except (ValueError, TypeError):
        raise DataFileError(path, node.line_of("format"), f"{where}.format", fmt, "a Python format spec like .2f")
    table = Table(name=name, title=node.get("title") or name, fixed=fixed, format=fmt,
                  rows=_axis(node.get("rows"), path, f"{where}.rows"),
                  columns=_axis(node.get("columns"), path, f"{where}.columns"),
                  protocol={**base_protocol, **check_protocol(node.get("protocol"), path, f"{where}.protocol")},
                  method_options={**(base_options or {}),
                                  **check_method_options(node.get("method_options"), path, f"{where}.method_options")},
                  caption=node.get("caption") or "", source=node.get("source") or "", layout=layout,
                  model_axis=axis, plot=bool(node.get("plot", True)), note=node.get("note") or "", line=node.line)
    for row in table.rows:
        for col in table.columns:
            merged = {**table.fixed, **row.select, **col.select}
            for req in ("model", "score", "metric") + (("sparsity",) if vocab.prunes(merged.get("score")) else ()):
                if req not in merged:
                    raise DataFileError(path, node.line, where, f"row {row.label!r} x column {col.label!r}", 
                                        f"a `{req}` from `fixed`, the row or the column")
    return table


def load_layout(path: str | Path, paper: Optional[str] = None) -> Layout:
    path = Path(path)
    doc = load_yaml(path)
    if not isinstance(doc, LinedDict):
        raise DataFileError(path, None, "(top level)", doc, "a mapping with paper, tables")
    for k in doc:
        if k not in _TOP:
            raise DataFileError(path, doc.line_of(k), k, k, "one of " + ", ".join(_TOP))
    name = doc.get("paper")
    if paper is not None and name != paper:
        raise DataFileError(path, doc.line_of("paper"), "paper", name, f"{paper!r} (the directory name)")
    base = check_protocol(doc.get("protocol"), path, "protocol")
    options = check_method_options(doc.get("method_options"), path, "method_options")
    tables = doc.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise DataFileError(path, doc.line_of("tables"), "tables", tables, "a mapping name -> table layout")
    return Layout(paper=name, title=doc.get("title") or name, path=path,
                  tables={n: _table(n, t, base, path, options) for n, t in tables.items()},
                  tolerances=check_tolerances(doc.get("tolerances"), path, "tolerances"),
                  pareto_fronts=bool(doc.get("pareto_fronts", False)))
