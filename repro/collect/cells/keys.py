"""Cell keys: what identifies one number of a paper table, and how a run record is matched against it.

A key is (model, score, allocation, recovery, pattern, sparsity, metric) plus optional extra `config.<path>`
equalities (e.g. `config.model.seqlen: 4096`). Reported entries (`reported.yaml`) and layout cells
(`tables.yaml`) are both written as selectors over these fields; `check_selector` validates one against the fixed
vocabulary (`vocab.py`) and the typed run config (`repro/config.py`), naming the file and line of a mistake.
A dense model has no allocation, pattern or sparsity: its key drops them, so one dense run fills the dense row
of every table at every sparsity.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from repro.collect import vocab
from repro.collect.yamlio import DataFileError, LinedDict

CORE_FIELDS = ("model", "score", "allocation", "recovery", "pattern", "sparsity", "metric")
DEFAULTS = {"allocation": "uniform", "recovery": "none", "pattern": "unstructured"}
# Sections of RunConfig whose sub-fields are method-specific (validated by the method's own schema, if built).
_FREE_SECTIONS = ("score", "allocation", "recovery", "logger", "experiment")


@dataclass(frozen=True)
class CellKey:
    model: str
    score: str
    metric: str
    allocation: Optional[str] = "uniform"
    recovery: str = "none"
    pattern: Optional[str] = "unstructured"
    sparsity: Optional[float] = None
    extra: tuple = ()          # sorted ((config.path, value), ...)

    def normalized(self) -> "CellKey":
        if not vocab.prunes(self.score):
            return dataclasses.replace(self, allocation=None, pattern=None, sparsity=None)
        return dataclasses.replace(self, sparsity=None if self.sparsity is None else round(float(self.sparsity), 6))

    def method_label(self) -> str:
        parts = [self.score]
        if self.allocation not in (None, "uniform"):
            parts.append(f"+{self.allocation}")
        if self.recovery not in (None, "none"):
            parts.append(f"+{self.recovery}")
        return " ".join(parts)

    def describe(self) -> str:
        s = f"{self.model} {self.method_label()}"
        if vocab.prunes(self.score):
            s += f" {self.sparsity:g} {self.pattern}" if self.sparsity is not None else f" {self.pattern}"
        s += f" {self.metric}"
        return s + "".join(f" {k}={v}" for k, v in self.extra)


def _valid_config_path(path: str) -> bool:
    from repro.config import RunConfig

    parts = path.split(".")[1:]
    cls = RunConfig
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return False
        if i == 0 and part in _FREE_SECTIONS:
            return True
        default = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING \
            else fields[part].default
        if not dataclasses.is_dataclass(default):
            return i == len(parts) - 1 or isinstance(default, dict) or default is None
        cls = type(default)
    return True


def check_selector(sel: LinedDict, path, where: str, ignore=("label",)) -> dict:
    """Validate the selector fields of one mapping; returns {field: value} without the ignored keys."""
    models = vocab.model_names()
    choices = {"score": vocab.SCORES, "allocation": vocab.ALLOCATIONS, "recovery": vocab.RECOVERIES,
               "pattern": vocab.PATTERNS, "model": models, "metric": vocab.metric_names()}
    out = {}
    for key, value in sel.items():
        if key in ignore:
            continue
        line = sel.line_of(key) if isinstance(sel, LinedDict) else None
        field = f"{where}.{key}"
        if key in choices:
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v not in choices[key]:
                    raise DataFileError(path, line, field, v, "one of " + ", ".join(choices[key]))
        elif key == "sparsity":
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                    raise DataFileError(path, line, field, v, "a fraction in [0, 1) (0.5 = 50%)")
        elif isinstance(key, str) and key.startswith("config."):
            if not _valid_config_path(key):
                raise DataFileError(path, line, field, key, "a field of the run config (repro/config.py RunConfig)",
                                    "e.g. config.model.seqlen, config.calib.nsamples, config.score.<method field>")
        else:
            raise DataFileError(path, line, field, key, "a selector field: " + ", ".join(CORE_FIELDS)
                                + ", or config.<path> (a RunConfig field)")
        out[key] = value
    return out


def make_key(fields: dict) -> CellKey:
    """A normalized CellKey from a merged selector (all list values already expanded)."""
    extra = tuple(sorted((k, v) for k, v in fields.items() if k.startswith("config.")))
    core = {k: fields.get(k, DEFAULTS.get(k)) for k in CORE_FIELDS}
    return CellKey(extra=extra, **core).normalized()
