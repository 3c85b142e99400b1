"""Fill a paper's table layouts with reproduced and reported numbers and judge every cell.

    paper = build_paper("owl", load_records("results"))
    for t in paper.tables.values(): print(t.coverage)

Per cell: the records that match its key (`keys.record_matches`) and carry its metric are grouped by
experiment variant (the identity without the seeds); the variant closest to the paper's protocol (then the one
with most seeds, then the newest) is used and the others are counted. Its values give mean, std (sample, n-1)
and n. Against the reported value: Δ = mean - reported, relative Δ = Δ / |reported|, tolerance =
max(abs, rel x |reported|) + resolution/2, and the verdict

    reproduced  |Δ| <= tolerance            close  |Δ| <= close x tolerance        off  otherwise
    not run     no matching record           not reported  a record but no reported number

A record whose fingerprint differs from the paper protocol keeps its verdict and is flagged `protocol differs`.
"""
from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from repro.collect import vocab
from repro.collect.cells.keys import CellKey
from repro.collect.cells.layouts import AxisItem, Layout, Table
from repro.collect.cells.paper import EXPERIMENTS_DIR, load_paper
from repro.collect.cells.reported import ReportedEntry, ReportedSet
from repro.collect.compare.protocol import deviations, method_deviations
from repro.collect.records.fields import record_key_fields
from repro.collect.records.load import RecordSet, variant_id
from repro.collect.yamlio import DataFileError
from repro.record import dotted_get

@dataclass
class Cell:
    table: str
    row: str
    column: str
    key: CellKey
    reported: Optional[ReportedEntry]
    values: list = field(default_factory=list)
    run_dirs: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    mean: Optional[float] = None
    std: Optional[float] = None
    delta: Optional[float] = None
    rel_delta: Optional[float] = None
    tolerance: Optional[float] = None
    verdict: str = "not run"
    deviations: list = field(default_factory=list)
    other_variants: int = 0
    extra: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def reported_value(self) -> Optional[float]:
        return None if self.reported is None else self.reported.value

    @property
    def protocol_differs(self) -> bool:
        return bool(self.deviations)


@dataclass
class TableResult:
    table: Table
    cells: list

    def cell(self, row: str, column: str) -> Cell:
        return next(c for c in self.cells if c.row == row and c.column == column)

    def counts(self) -> dict:
        out = {v: 0 for v in vocab.VERDICTS}
        for c in self.cells:
            out[c.verdict] += 1
        return out

    @property
    def coverage(self) -> str:
        paper_cells = [c for c in self.cells if not c.extra]
        n = len(paper_cells)
        rep = sum(c.reported_value is not None for c in paper_cells)
        run = sum(c.n > 0 for c in paper_cells)
        counts = self.counts()
        judged = ", ".join(f"{counts[v]} {v}" for v in vocab.VERDICTS if counts[v])
        flag = sum(c.protocol_differs for c in self.cells)
        extra = sum(c.n > 0 for c in self.cells if c.extra)
        return (f"coverage: {rep}/{n} paper cells reported, {run}/{n} run"
                + (f" (+{extra} cells of models not in the paper)" if extra else "")
                + f"; verdicts: {judged}" + (f"; protocol differs in {flag}" if flag else ""))


@dataclass
class PaperResult:
    paper: str
    title: str
    layout: Layout
    reported: ReportedSet
    tables: dict
    unplaced_runs: list = field(default_factory=list)     # run dirs of this paper's experiment in no cell
    records: Optional[RecordSet] = None
    fronts: dict = field(default_factory=dict)             # multi-objective runs (repro/collect/compare/pareto.py)


def record_matches(record: dict, key: CellKey) -> bool:
    """Does this run record belong to the cell (metric aside)?"""
    rk = record_key_fields(record)
    if rk["model"] != key.model or rk["score"] != key.score or rk["recovery"] != key.recovery:
        return False
    if vocab.prunes(key.score):
        if rk["allocation"] != key.allocation or rk["pattern"] != key.pattern:
            return False
        if rk["sparsity"] is None or key.sparsity is None or abs(float(rk["sparsity"]) - key.sparsity) > 1e-6:
            return False
    return all(dotted_get(record, k) == v for k, v in key.extra)


def tolerance_for(metric_name: str, reported: ReportedEntry, tolerances: dict) -> tuple:
    fam = vocab.metric(metric_name).family
    tol = {**vocab.DEFAULT_TOLERANCES[fam], **tolerances.get(fam, {})}
    t = max(tol["abs"], tol["rel"] * abs(reported.value)) + (reported.resolution or 0.0) / 2
    return t, tol["close"]


def judge(cell: Cell, tolerances: dict) -> None:
    """Set mean/std/Δ/tolerance/verdict of a cell whose values and reported entry are filled."""
    if cell.values:
        cell.mean = statistics.fmean(cell.values)
        cell.std = statistics.stdev(cell.values) if len(cell.values) > 1 else None
    rep = cell.reported_value
    if not cell.values:
        cell.verdict = "not run"
    elif rep is None:
        cell.verdict = "not reported"
    else:
        cell.delta = cell.mean - rep
        cell.rel_delta = cell.delta / abs(rep) if rep else math.inf
        cell.tolerance, close = tolerance_for(cell.key.metric, cell.reported, tolerances)
        ad = abs(cell.delta)
        cell.verdict = "reproduced" if ad <= cell.tolerance else "close" if ad <= close * cell.tolerance else "off"


def _fill(cell: Cell, records: list, protocol: dict, method_options: Optional[dict] = None) -> None:
    metric = vocab.metric(cell.key.metric)
    groups: dict = {}
    for r in records:
        if record_matches(r, cell.key) and metric.from_record(r) is not None:
            groups.setdefault(variant_id(r), []).append(r)
    if not groups:
        return

    def all_deviations(rec):
        return (deviations(rec, cell.key.metric, protocol)
                + method_deviations(rec, cell.key.extra, method_options) + rec.get("_stand_in", []))

    def rank(item):
        return (len(all_deviations(item[1][0])), -len(item[1]))

    newest_first = sorted(groups.items(), reverse=True,
                          key=lambda item: max(str(r.get("finished_at", "")) for r in item[1]))
    ordered = sorted(newest_first, key=rank)   # stable: among equals, the newest variant wins
    recs = sorted(ordered[0][1], key=lambda r: (r["config"].get("seed", 0), r.get("identity", "")))
    cell.values = [metric.from_record(r) for r in recs]
    cell.run_dirs = [r.get("run_dir") for r in recs]
    cell.seeds = [(r["config"].get("seed"), (r["config"].get("calib") or {}).get("seed")) for r in recs]
    cell.deviations = all_deviations(recs[0])
    cell.other_variants = len(ordered) - 1


def apply_stand_ins(records: list, stand_ins: dict) -> list:
    """`{"smollm2-135m": "llama2-7b"}`: also count that model's runs in the other model's cells, flagged."""
    out = list(records)
    for r in records:
        src = record_key_fields(r)["model"]
        if src in stand_ins:
            twin = copy.deepcopy(r)
            twin["config"]["model"]["name"] = stand_ins[src]
            twin["_stand_in"] = [f"model {src} stands in for {stand_ins[src]}"]
            twin["identity"] = f"{r.get('identity')}@{stand_ins[src]}"
            out.append(twin)
    return out


def _extra_models(table: Table, records: list) -> list:
    """Models with runs that would fill this table but have no column (row) in the paper: appended, flagged.
    Each axis item is a template (its selector without the model); a probe copies it with the other model."""
    if table.model_axis is None:
        return []
    axis = table.columns if table.model_axis == "columns" else table.rows
    others = table.rows if table.model_axis == "columns" else table.columns
    known = {item.select.get("model") for item in axis}
    templates = []
    for item in axis:
        t = {k: v for k, v in item.select.items() if k != "model"}
        if t not in templates:
            templates.append(t)
    extra = []
    trained = {record_key_fields(r)["model"] for r in records
               if not ((r.get("config") or {}).get("model") or {}).get("random_init")}   # random weights: no column
    for model in sorted(trained - known - {None}):
        for t in templates:
            label = " ".join([model] + [f"{v:.0%}" if isinstance(v, float) else str(v) for v in t.values()])
            probe = AxisItem(label=label, select={**t, "model": model}, extra=True)
            for other in others:
                row, col = (other, probe) if table.model_axis == "columns" else (probe, other)
                key = table.cell_key(row, col)
                if any(record_matches(r, key) and vocab.metric(key.metric).from_record(r) is not None
                       for r in records):
                    extra.append(probe)
                    break
    return extra


def build_table(table: Table, reported: ReportedSet, records: list, tolerances: dict) -> TableResult:
    extra = _extra_models(table, records)
    rows = table.rows + (extra if table.model_axis == "rows" else [])
    cols = table.columns + (extra if table.model_axis == "columns" else [])
    by_key = reported.by_key()
    cells = []
    for row in rows:
        for col in cols:
            key = table.cell_key(row, col)
            cell = Cell(table=table.name, row=row.label, column=col.label, key=key,
                        reported=by_key.get((table.name, key)), extra=row.extra or col.extra)
            _fill(cell, records, table.protocol, table.method_options)
            judge(cell, tolerances)
            cells.append(cell)
    return TableResult(table=table, cells=cells)


def build_paper(paper: str, records: RecordSet | list, experiments_dir: Path = EXPERIMENTS_DIR,
                tolerances: Optional[dict] = None, tables: Optional[list] = None,
                stand_ins: Optional[dict] = None) -> PaperResult:
    layout, reported = load_paper(paper, experiments_dir)
    recs = records.records if isinstance(records, RecordSet) else list(records)
    recs = apply_stand_ins(recs, stand_ins or {})
    if layout.pareto_fronts:
        from repro.collect.compare import pareto
        recs = pareto.annotate(recs)                       # metrics.hv.<domains> with the reference rule
    tol = {fam: {**layout.tolerances.get(fam, {}), **(tolerances or {}).get(fam, {})}
           for fam in vocab.DEFAULT_TOLERANCES}
    names = tables or list(layout.tables)
    for name in names:
        if name not in layout.tables:
            raise DataFileError(layout.path, None, "--table", name, "one of " + ", ".join(layout.tables))
    results = {n: build_table(layout.tables[n], reported, recs, tol) for n in names}
    used = {d for t in results.values() for c in t.cells for d in c.run_dirs}
    unplaced = sorted(r.get("run_dir") for r in recs if (r["config"].get("experiment") or {}).get("paper") == paper
                      and r.get("run_dir") not in used)
    return PaperResult(paper=paper, title=reported.title, layout=layout, reported=reported, tables=results,
                       unplaced_runs=unplaced, records=records if isinstance(records, RecordSet) else None,
                       fronts=pareto.fronts(recs) if layout.pareto_fronts else {})


