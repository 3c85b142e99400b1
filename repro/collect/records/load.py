"""Run records from disk: found, version-checked, migrated, deduplicated by identity.

    recs = load_records("results")          # every results/runs/*/result.json with status ok
    recs.records, recs.skipped              # the usable records; (path, reason) for the rest

Records are the source of truth (docs/record.md). Two records with the same identity are the same experiment
(e.g. the same run copied into two results directories): the collector counts it once, keeping the newest.
Records of an older `schema_version` are upgraded by the functions in `MIGRATIONS` (version -> record of
version + 1); a record too old for the chain, or written by a newer repro, is skipped with a message that says
what to do (rerun it with `force=true`, or upgrade repro). A record made before a code change that changed its
config's numbers (repro/numerics.py) is skipped too, naming the change.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable

from repro.numerics import record_staleness
from repro.record import RECORD_FILE, SCHEMA_VERSION
from repro.collect.yamlio import DataFileError

log = logging.getLogger("repro.collect")

# schema_version v -> function turning a v record into a v+1 record. Version 1 is the first released schema;
# add an entry here whenever repro.record.SCHEMA_VERSION is bumped.
MIGRATIONS: Dict[int, Callable[[dict], dict]] = {
    1: lambda r: {"prune_id": None, "recover_id": None, "pruned_model": None, **r},   # 2: stage identities
}
SEED_FIELDS = (("seed",), ("calib", "seed"))


@dataclass
class RecordSet:
    records: list = field(default_factory=list)        # ok records, one per identity
    skipped: list = field(default_factory=list)        # (path, reason)
    duplicates: int = 0
    roots: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def frame(self):
        """One row per record: key fields, seeds, identity, run dir and every metric (pandas DataFrame)."""
        return records_frame(self.records)


def record_files(root: Path) -> list:
    if (root / "runs").is_dir():
        root = root / "runs"
    if (root / RECORD_FILE).is_file():
        return [root / RECORD_FILE]
    return sorted(root.glob(f"*/{RECORD_FILE}"))


def migrate(record: dict, path) -> dict:
    """Bring a record to SCHEMA_VERSION or raise ValueError saying why it cannot be read."""
    version = record.get("schema_version")
    if not isinstance(version, int):
        raise ValueError("no integer `schema_version`: not a repro run record (docs/record.md)")
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is newer than this repro reads ({SCHEMA_VERSION}): upgrade repro")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ValueError(f"schema_version {version} has no migration to {SCHEMA_VERSION}: rerun the experiment "
                             f"with force=true, or add MIGRATIONS[{version}] in repro/collect/records/load.py")
        record = MIGRATIONS[version](record)
        version += 1
        record["schema_version"] = version
    return record


def load_records(results: str | Path | Iterable, include_failed: bool = False) -> RecordSet:
    """Read every record under one or more results directories (`<dir>/runs/*/result.json`)."""
    roots = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    out = RecordSet(roots=roots)
    best: dict = {}
    for root in roots:
        if not root.is_dir():
            raise DataFileError(root, None, "--results", str(root), "an existing results directory",
                                "Runs write to <results>/runs/<identity>/result.json (paths.results).")
        for path in record_files(root):
            try:
                rec = migrate(json.loads(path.read_text()), path)
            except (OSError, json.JSONDecodeError, ValueError) as e:
                out.skipped.append((str(path), str(e).splitlines()[0]))
                continue
            if rec.get("status") != "ok" and not include_failed:
                out.skipped.append((str(path), f"status {rec.get('status')!r}"))
                continue
            stale = record_staleness(rec)
            if stale:
                out.skipped.append((str(path), stale))
                continue
            rec.setdefault("run_dir", str(path.parent))
            ident = rec.get("identity") or str(path.parent)
            if ident in best:
                out.duplicates += 1
                if str(rec.get("finished_at", "")) <= str(best[ident].get("finished_at", "")):
                    continue
            best[ident] = rec
    out.records = list(best.values())
    for path, reason in out.skipped:
        log.info("skipped %s: %s", path, reason)
    return out


def variant_id(record: dict) -> str:
    """The identity without the seeds: records that differ only by seed are repeats of one experiment."""
    fields = json.loads(json.dumps(record.get("identity_fields") or record.get("config") or {}, default=str))
    for path in SEED_FIELDS:
        node = fields
        for p in path[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def records_frame(records: list):
    import pandas as pd

    from repro.collect.records.fields import record_key_fields
    from repro.record import flatten

    rows = []
    for r in records:
        cfg = r.get("config", {})
        row = {**record_key_fields(r), "seed": cfg.get("seed"), "calib_seed": (cfg.get("calib") or {}).get("seed"),
               "identity": r.get("identity"), "variant": variant_id(r), "run_dir": r.get("run_dir"),
               "status": r.get("status"), "paper": (cfg.get("experiment") or {}).get("paper"),
               "sparsity_measured": (r.get("sparsity") or {}).get("overall")}
        row.update({k: float(v) for k, v in flatten(r.get("metrics", {})).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_run(arg: str, results: str | Path = "results") -> dict:
    """A record from a run directory, a result.json path, or an identity (prefix) under <results>/runs."""
    p = Path(arg)
    candidates = [p / RECORD_FILE if p.is_dir() else p] if p.exists() else []
    if not candidates:
        runs = Path(results) / "runs"
        matches = sorted(runs.glob(f"{arg}*/{RECORD_FILE}")) if runs.is_dir() and arg else []
        if len(matches) > 1:
            raise DataFileError(runs, None, "run", arg, "a unique identity prefix",
                                "Matches: " + ", ".join(m.parent.name for m in matches[:8]))
        candidates = matches
    if not candidates or not candidates[0].is_file():
        raise DataFileError(arg, None, "run", arg, f"a run directory, a {RECORD_FILE}, or an identity under "
                            f"{Path(results) / 'runs'}")
    path = candidates[0]
    try:
        rec = migrate(json.loads(path.read_text()), path)
    except (json.JSONDecodeError, ValueError) as e:
        raise DataFileError(path, None, "record", str(e).splitlines()[0], "a readable run record") from None
    rec.setdefault("run_dir", str(path.parent))
    return rec
