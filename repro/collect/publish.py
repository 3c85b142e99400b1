"""The published numbers: README's demo table and `results/tables/` are generated from committed run records.

    python -m repro.collect.publish --add results/runs/<id> ...   # copy runs' records into results/published/
    python -m repro.collect.publish                              # regenerate results/tables/ and README's blocks
    python -m repro.collect.publish --check                      # exit 1 if a generated file is stale (tests)

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


def rekey(published: Path = PUBLISHED) -> tuple[list, list]:
    """Move published records to the identity the current code computes for what they ran, metrics untouched:
    - a record whose identity lacks a code change that now names its method (repro/numerics.py `CHANGES`) moves
      only when the code that made it already had the change: its `versions.git_commit` and, for a reused prune,
      the commit that built the prune (`pruned_model.built_by`, else the published record that built it) must
      contain the change's commit; otherwise it is stale and stays where it is (the collector skips it);
    - a record made before a config field existed (`ADDED`) gets the value its code computed with, in its config
      and identity fields (the field did not exist, so there is no ancestry to check).
    The new identity comes from the record's own `identity_fields` (plus those two), so nothing is re-resolved
    from paths of the machine that made it. `identity`, `identity_fields`, `prune_id`, `recover_id`, `run_dir`
    are recomputed; the move is noted under `rekeyed`. Returns (moves [(old, new)], stale [(identity, why)])."""
    import json

    from repro.config import ConfigError, load_run_config, to_plain
    from repro.numerics import contains, legacy_fields, outdated, record_numerics
    from repro.record import dotted_get, dotted_set, identity_of_fields
    from repro.stages import prune_fields, recover_fields

    paths = sorted((published / "runs").glob("*/result.json"))
    records = {path: json.loads(path.read_text()) for path in paths}
    builders = {r["pruned_model"]["prune_id"]: (r.get("versions") or {}).get("git_commit")
                for r in records.values() if (r.get("pruned_model") or {}).get("reused") is False}
    moves, stale = [], []
    for path, record in records.items():
        fields = dict(record.get("identity_fields") or {})
        try:
            legacy = legacy_fields(record["config"], to_plain(load_run_config(record["config"])))
        except (ConfigError, ValueError, TypeError) as e:
            stale.append((record["identity"], f"its config no longer loads: {str(e).splitlines()[0]}"))
            continue
        recorded, numerics = record_numerics(record)
        changes = outdated(recorded, numerics)
        if not changes and not legacy:
            continue
        made_by = [(record.get("versions") or {}).get("git_commit")]
        pruned = record.get("pruned_model") or {}
        if pruned.get("reused"):
            made_by.append(pruned.get("built_by") or builders.get(pruned.get("prune_id")))
        missing = [c for c in changes if not all(contains(commit, c) for commit in made_by)]
        if missing:
            stale.append((record["identity"], "made by code without " + ", ".join(c.commit for c in missing)))
            continue
        fields = json.loads(json.dumps(fields))
        for key, value in legacy.items():
            dotted_set(record["config"], key, value)
            if isinstance(dotted_get(fields, key.rpartition(".")[0]), dict):   # its group is in the identity
                dotted_set(fields, key, value)
        fields.pop("numerics", None)
        fields.update({"numerics": numerics} if numerics else {})
        prune_id = identity_of_fields(prune_fields(fields)) if record.get("prune_id") else None
        recover_id = identity_of_fields(recover_fields(fields, prune_id)) if record.get("recover_id") else None
        new = identity_of_fields(fields)
        note = {"from": record["identity"], **({"numerics": [c.commit for c in changes]} if changes else {}),
                **({"fields_added": legacy} if legacy else {})}
        record.update(identity=new, identity_fields=fields, prune_id=prune_id, recover_id=recover_id,
                      rekeyed=[*record.get("rekeyed", []), note])
        _write(record, published)
        shutil.rmtree(path.parent)
        moves.append((note["from"], new))
    return moves, stale


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
        moves, stale = rekey()
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
