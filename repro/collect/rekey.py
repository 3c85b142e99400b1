"""Move run records to the identity today's code computes for what they ran, so they keep being found.

    repro rekey                                  # your results folder (default results/): run folders and stages
    repro rekey --results /data/sweeps --dry-run # say what would move
    python -m repro.collect.publish --rekey      # the committed records in results/published/

An identity changes under a record when the code learns something about it (repro/numerics.py):
- a code change that changed a method's numbers (`CHANGES`). A record moves only when the code that made it
  already had the change: its `versions.git_commit` and, for a reused prune, the commit that built the prune
  (`pruned_model.built_by`, else the record that built it) must contain the change's commit (git ancestry);
  otherwise it is stale and stays where it is (the collector skips it; rerun it);
- a config field added since the record was made (`ADDED`): the record gets the value its code computed with, in
  its config and identity fields (the field did not exist, so there is no ancestry to check).
The new identities come from the record's own `identity_fields` (plus those two), so nothing is re-resolved from
paths of the machine that made it. Metrics are untouched; `identity`, `identity_fields`, `prune_id`,
`recover_id` and `run_dir` are rewritten and the move is noted under `rekeyed`. The run folder moves whole (its
run.log and config.yaml with it), and in a results folder so do the stored stages it names
(`pruned/<prune_id>`, `recovered/<recover_id>`), so the next run of the same config finds its record and reuses
its prune instead of recomputing them. A folder already at the new identity is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

STAGE_DIRS = (("pruned", "prune_id"), ("recovered", "recover_id"))


def _new_identity(record: dict, builders: dict) -> tuple:
    """(record with today's identity fields and ids, note) — or (None, why it stays stale) — or (None, None)
    when it is current."""
    from repro.config import ConfigError, load_run_config, to_plain
    from repro.numerics import contains, legacy_fields, outdated, record_numerics
    from repro.record import dotted_get, dotted_set, identity_of_fields
    from repro.stages import prune_fields, recover_fields

    try:
        legacy = legacy_fields(record["config"], to_plain(load_run_config(record["config"])))
    except (ConfigError, ValueError, TypeError) as e:
        return None, f"its config no longer loads: {str(e).splitlines()[0]}"
    recorded, numerics = record_numerics(record)
    changes = outdated(recorded, numerics)
    if not changes and not legacy:
        return None, None
    made_by = [(record.get("versions") or {}).get("git_commit")]
    pruned = record.get("pruned_model") or {}
    if pruned.get("reused"):
        made_by.append(pruned.get("built_by") or builders.get(pruned.get("prune_id")))
    missing = [c for c in changes if not all(contains(commit, c) for commit in made_by)]
    if missing:
        return None, "made by code without " + ", ".join(c.commit for c in missing)
    record = json.loads(json.dumps(record))
    fields = record.get("identity_fields") or {}
    for key, value in legacy.items():
        dotted_set(record["config"], key, value)
        if isinstance(dotted_get(fields, key.rpartition(".")[0]), dict):      # its group is in the identity
            dotted_set(fields, key, value)
    fields.pop("numerics", None)
    fields.update({"numerics": numerics} if numerics else {})
    prune_id = identity_of_fields(prune_fields(fields)) if record.get("prune_id") else None
    recover_id = identity_of_fields(recover_fields(fields, prune_id)) if record.get("recover_id") else None
    note = {"from": record["identity"], **({"numerics": [c.commit for c in changes]} if changes else {}),
            **({"fields_added": legacy} if legacy else {})}
    record.update(identity=identity_of_fields(fields), identity_fields=fields, prune_id=prune_id,
                  recover_id=recover_id, rekeyed=[*record.get("rekeyed", []), note])
    return record, note


def rekey(root: str | Path = "results", published: bool = False, dry_run: bool = False) -> tuple[list, list]:
    """Move every record under `<root>/runs/` whose identity today's code computes differently (module doc).
    `published`: `root` is results/published (records only; `run_dir` written as it reads in any checkout).
    Returns (moves [(old, new)], stale [(identity, why)])."""
    from repro.record import RECORD_FILE, write_json_atomic

    root = Path(root)
    paths = sorted((root / "runs").glob(f"*/{RECORD_FILE}"))
    records = {path: json.loads(path.read_text()) for path in paths}
    builders = {r["pruned_model"]["prune_id"]: (r.get("versions") or {}).get("git_commit")
                for r in records.values() if (r.get("pruned_model") or {}).get("reused") is False}
    moves, stale = [], []
    for path, old in records.items():
        if old.get("status") != "ok":
            continue
        new, why = _new_identity(old, builders)
        if new is None:
            stale += [(old["identity"], why)] if why else []
            continue
        dst = root / "runs" / new["identity"]
        if dst.exists():
            stale.append((old["identity"], f"{dst} already exists: a run of today's identity; not moved"))
            continue
        moves.append((old["identity"], new["identity"]))
        if dry_run:
            continue
        for kind, key in ([] if published else STAGE_DIRS):
            src, to = root / kind / str(old.get(key)), root / kind / str(new.get(key))
            if old.get(key) and new.get(key) != old.get(key) and src.is_dir() and not to.exists():
                src.rename(to)
        path.parent.rename(dst)
        new["run_dir"] = f"results/runs/{new['identity']}" if published else str(dst)
        write_json_atomic(dst / RECORD_FILE, new)
    return moves, stale


def rekey_main(argv) -> None:
    p = argparse.ArgumentParser(prog="repro rekey", description=__doc__.splitlines()[0])
    p.add_argument("--results", default=os.environ.get("REPRO_RESULTS", "results"),
                   help="the results folder (<results>/runs/...; default $REPRO_RESULTS or results)")
    p.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    args = p.parse_args(argv)
    moves, stale = rekey(args.results, dry_run=args.dry_run)
    for old, new in moves:
        print(f"{'would move' if args.dry_run else 're-keyed'} {old} -> {new}")
    for ident, why in stale:
        print(f"not moved: {ident}: {why}")
    if not moves and not stale:
        print(f"every record under {Path(args.results) / 'runs'} has today's identity")
