"""The published numbers: README's demo table and `results/tables/` are generated from committed run records.

    python -m repro.collect.publish --add results/runs/<id> ...   # copy runs' records into results/published/
    python -m repro.collect.publish                              # regenerate results/tables/ and README's blocks
    python -m repro.collect.publish --check                      # exit 1 if a generated file is stale (tests)
    python -m repro.collect.publish --rekey                      # move records to today's identities (rekey.py)

`results/published/runs/<identity>/result.json` holds the records every published number comes from (the record
only: weights and artefacts stay in the run's own folder). `results/tables/` is `repro tables all --format all`
over them; README.md's block between `<!-- BEGIN generated: demo -->` and `<!-- END generated: demo -->` is
`repro demo`'s table (repro/demo.py `format_table`) over the published records of the demo's three runs. Nothing
in either is typed by hand; `--check` (tests/test_published.py) fails when they drift from the records.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "published"
TABLES = ROOT / "results" / "tables"
README = ROOT / "README.md"
CHECKED_SUFFIXES = (".md", ".tex", ".csv")      # html embeds matplotlib PNGs: regenerated, not byte-compared


def add_runs(run_dirs, published: Path = PUBLISHED) -> list:
    """Copy each run's result.json into `<published>/runs/<identity>/`; only `ok` records are published."""
    import json

    out = []
    for d in map(Path, run_dirs):
        src = d / "result.json" if d.is_dir() else d
        record = json.loads(src.read_text())
        if record.get("status") != "ok":
            raise SystemExit(f"publish: {src} has status {record.get('status')!r}; only ok records are published")
        out.append(_write(record, published))
    return out


def _write(record: dict, published: Path) -> Path:
    """`<published>/runs/<identity>/result.json`, its `run_dir` set to where it lives in any checkout."""
    import json

    dst = published / "runs" / record["identity"] / "result.json"
    dst.parent.mkdir(parents=True, exist_ok=True)
    record["run_dir"] = f"results/runs/{record['identity']}"
    dst.write_text(json.dumps(record, indent=2, default=str))
    return dst


def demo_block(published: Path = PUBLISHED) -> str:
    """README's demo table from the published records of the demo's runs (same overrides as `repro demo`)."""
    from hydra import compose, initialize_config_dir

    from repro import record as rec
    from repro.demo import DEMO_METHODS, format_table
    from repro.run import CONF_DIR, run_identity
    from repro.config import load_run_config

    records = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for method in DEMO_METHODS:
            run = load_run_config(compose("config", overrides=["env=offline", *method]))
            found = rec.read_record(rec.run_dir(published, run_identity(run)))
            if found is None:
                raise SystemExit(f"publish: no published record for the demo run {' '.join(method)}; run "
                                 "`repro demo`, then `python -m repro.collect.publish --add results/runs/<id>`")
            records.append(found)
    return format_table(records, published=True)


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN generated: {name} -->", f"<!-- END generated: {name} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"publish: README.md lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body.strip("\n") + "\n" + end + rest.split(end, 1)[1]


def generate(out_tables: Path, readme_in: Path, readme_out: Path, published: Path = PUBLISHED) -> None:
    import contextlib
    import io
    import os

    from repro.collect.cli import tables_main

    cwd = os.getcwd()
    os.chdir(ROOT)                      # the tables name the results folder relative to the repository
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            tables_main(["all", "--format", "all", "--out", str(out_tables),
                         "--results", os.path.relpath(published, ROOT)])
    finally:
        os.chdir(cwd)
    readme_out.write_text(replace_block(readme_in.read_text(), "demo", "```" + demo_block(published) + "\n```"))


def stale_files(published: Path = PUBLISHED) -> list:
    """Generated files that differ from what the published records give (empty = up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "tables", README, tmp / "README.md", published)
        stale = [] if filecmp.cmp(tmp / "README.md", README, shallow=False) else ["README.md"]
        fresh = {p.relative_to(tmp / "tables") for p in (tmp / "tables").rglob("*") if p.suffix in CHECKED_SUFFIXES}
        committed = {p.relative_to(TABLES) for p in TABLES.rglob("*") if p.suffix in CHECKED_SUFFIXES}
        for rel in sorted(fresh | committed):
            a, b = tmp / "tables" / rel, TABLES / rel
            if not (a.exists() and b.exists() and filecmp.cmp(a, b, shallow=False)):
                stale.append(f"results/tables/{rel}")
        return stale


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m repro.collect.publish", description=__doc__.splitlines()[0])
    p.add_argument("--add", nargs="+", metavar="RUN_DIR", help="publish these runs' records first")
    p.add_argument("--rekey", action="store_true",
                   help="move published records to the identities this code gives what they ran (numerics "
                   "changes their code had; config fields added since)")
    p.add_argument("--check", action="store_true", help="exit 1 if README.md or results/tables/ are stale")
    args = p.parse_args(argv)
    if args.add:
        for path in add_runs(args.add):
            print(path)
    if args.rekey:
        from repro.collect.rekey import rekey

        moves, stale = rekey(PUBLISHED, published=True)
        for old, new in moves:
            print(f"re-keyed {old} -> {new}")
        for ident, why in stale:
            print(f"stale, not moved (rerun it): {ident}: {why}", file=sys.stderr)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale (run `python -m repro.collect.publish`): " + ", ".join(stale), file=sys.stderr)
            sys.exit(1)
        print("README.md and results/tables/ match results/published/")
        return
    if TABLES.exists():
        shutil.rmtree(TABLES)
    generate(TABLES, README, README)


if __name__ == "__main__":
    main()
