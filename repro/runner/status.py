"""`repro status`: the grid of a sweep with each job's status, key metric and run directory.

    repro status results/.hydra/multirun/2026-11-23_08-00-00          # a sweep directory (any launcher)
    repro status -m score=magnitude,wanda sparsity=0.5,0.7 env=offline  # a grid given as Hydra overrides
    repro status experiment=neuronal/table2 model=llama2-7b --json     # an experiment's grid, machine-readable

A status is read from the run records, never from the launcher's memory: `ok` / `failed` (a `result.json` with
that status), `running` (no `ok` record and another process holds the identity's lock), `corrupt` (a
`result.json` that cannot be read: its path is shown, and the next `repro run` recomputes it) or `missing`.
For a grid given as overrides, the grid is expanded by Hydra itself (the sweeper, `hydra.sweeper.params` of an
experiment included) with the gpu_pool launcher in dry-run mode, so `repro status` and a real launch always
agree on the jobs. For a sweep directory, the gpu_pool/slurm launchers' manifest (`repro_sweep.json`) is read;
for a sweep run by another launcher (basic, joblib), each job's saved `.hydra/config.yaml` is.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

from repro import record as rec

MANIFEST = "repro_sweep.json"
STATUSES = ("ok", "failed", "running", "corrupt", "missing")


def record_status(results: str, identity: str) -> tuple[str, Optional[dict]]:
    """(status, record or None) of one identity under a results root."""
    run_dir = rec.run_dir(results, identity)
    try:
        record = rec.read_record(run_dir)
    except (OSError, ValueError) as e:     # half-written or damaged: the next `repro run` recomputes it
        if run_dir.is_dir() and rec.identity_locked(run_dir):
            return "running", None
        return "corrupt", {"corrupt": f"unreadable {run_dir / rec.RECORD_FILE} ({str(e).splitlines()[0][:60]})"}
    if record and record.get("status") == "ok":
        return "ok", record
    if run_dir.is_dir() and rec.identity_locked(run_dir):
        return "running", record
    if record and record.get("status") == "failed":
        return "failed", record
    return "missing", record


def key_metric(record: Optional[dict]) -> str:
    """The number a reader looks for first: perplexity per dataset, else zero-shot mean accuracy."""
    if not record:
        return ""
    metrics = record.get("metrics") or {}
    parts = [f"{name} ppl {value:.3f}" for name, value in (metrics.get("ppl") or {}).items()
             if isinstance(value, (int, float))]
    mean = (metrics.get("zeroshot") or {}).get("mean")
    if isinstance(mean, (int, float)):
        parts.append(f"zeroshot {mean:.4f}")
    if "corrupt" in record:
        return record["corrupt"]
    if not parts and record.get("status") == "failed":
        err = record.get("error") or {}
        parts.append(f"{err.get('type', 'error')}: {str(err.get('message', ''))[:60]}")
    return ", ".join(parts)


def status_row(num, overrides, results: str, identity: str) -> dict:
    status, record = record_status(results, identity)
    return {"num": num, "overrides": " ".join(overrides), "identity": identity, "status": status,
            "metric": key_metric(record), "run_dir": str(rec.run_dir(results, identity))}


def render_table(rows: list[dict]) -> str:
    """A plain aligned table (rich, ASCII rules, no colour: copy-pasteable into an issue) followed by the counts
    per status. Cells are never wrapped or cut: the table is as wide as its longest run directory."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    columns = [("#", "num"), ("status", "status"), ("key metric", "metric"), ("overrides", "overrides"),
               ("run dir", "run_dir")]
    table = Table(box=box.ASCII2, show_edge=False, pad_edge=False, header_style=None)
    for title, _ in columns:
        table.add_column(title, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(str(row.get(key, "")) for _, key in columns))
    out = io.StringIO()
    Console(file=out, width=100_000, color_system=None, emoji=False, markup=False, highlight=False,
            legacy_windows=False).print(table, crop=False)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    shown = [s for s in STATUSES if s != "corrupt" or counts[s]]     # `corrupt` only when there is one
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    return "\n".join(lines + [f"{len(rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in shown)])


def rows_from_sweep_dir(sweep_dir: Path) -> list[dict]:
    manifest = sweep_dir / MANIFEST
    if manifest.exists():
        data = json.loads(manifest.read_text())
        return [status_row(j["num"], j["overrides"], j["results"], j["identity"]) for j in data["jobs"]]
    return _rows_from_job_dirs(sweep_dir)


def _rows_from_job_dirs(sweep_dir: Path) -> list[dict]:
    """A sweep run by another launcher: identities from each job's saved config (`<job>/.hydra/config.yaml`)."""
    from omegaconf import OmegaConf

    from repro.config import load_run_config
    from repro.stages import run_identity

    rows = []
    configs = sorted(sweep_dir.glob("*/.hydra/config.yaml"), key=lambda p: _natural(p.parent.parent.name))
    for path in configs:
        run = load_run_config(OmegaConf.load(path))
        overrides_file = path.parent / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        rows.append(status_row(path.parent.parent.name, overrides, run.paths.results, run_identity(run)))
    return rows


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _rows_from_overrides(overrides: list[str]) -> list[dict]:
    """Expand the grid with Hydra itself: a multirun with the gpu_pool launcher in dry-run mode."""
    from repro.run import hydra_main

    with tempfile.TemporaryDirectory(prefix="repro-status-") as tmp:
        user = [o for o in overrides if o not in ("-m", "--multirun") and not o.startswith("hydra/launcher=")]
        argv = ["repro status", "-m", *user, "hydra/launcher=gpu_pool", "hydra.launcher.dry_run=true",
                "hydra.launcher.progress=false", f"hydra.sweep.dir={tmp}", "hydra/hydra_logging=none",
                "hydra/job_logging=none"]
        saved = sys.argv
        sys.argv = argv
        try:
            hydra_main()
        finally:
            sys.argv = saved
        return rows_from_sweep_dir(Path(tmp))


def status_main(argv) -> None:
    argv = list(argv)
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(__doc__.split("\n\nA status")[0])
        raise SystemExit(0 if argv else 2)
    as_json = "--json" in argv
    target = [a for a in argv if a != "--json"]
    try:
        if len(target) == 1 and "=" not in target[0]:
            if not Path(target[0]).is_dir():
                raise SystemExit(f"repro status: {target[0]}: no such sweep directory (give a sweep folder, "
                                 "e.g. results/.hydra/multirun/<date>, or Hydra overrides)")
            rows = rows_from_sweep_dir(Path(target[0]))
        else:
            rows = _rows_from_overrides(target)
    except OSError as e:              # unreadable folder, read-only or full temporary disk: one line
        raise SystemExit(f"repro status: {e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None
    print(json.dumps(rows, indent=2) if as_json else render_table(rows))
