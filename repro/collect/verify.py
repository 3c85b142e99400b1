"""`repro verify <run> ...`: rerun a recorded run from its own config, here, and say whether this machine
reproduces its numbers.

    repro verify results/published/runs/0aa2f8547b332533            # rerun one published record, compare
    repro verify results/published/runs/* --dry-run                 # only: inputs found, identity recomputed
    repro verify <run> --map /data/old=/mnt/data --rtol 1e-3          # inputs moved; a looser verdict

Before any heavy work, for each record:
1. **Inputs.** Every local input the record fingerprinted (`identity_fields.inputs`: evaluation texts,
   calibration files, local weights, recovery data) is looked up by content: the recorded path, then each
   `--map OLD=NEW` rewrite of it, then the recorded path's tail inside this checkout (a record made in another
   clone names `/elsewhere/repro/assets/x.txt`; here it is `repro/assets/x.txt`). A file is used only if its
   SHA-256 is the recorded one; otherwise the run is not attempted and the field, path and fingerprint are named.
2. **Identity.** The record's config, with those paths, a scratch results folder and the value each config field
   added since it was made had before it existed (repro/numerics.py `ADDED`), must resolve to the record's
   identity, or differ from it only by those added fields (said in a note: `publish --rekey` moves such a
   published record). Otherwise the code or the inputs no longer compute the same run (a code change listed in
   repro/numerics.py, or an identity-schema change): the differing identity fields are listed and nothing runs.
Then the run executes with `force=true` into `--out` (default `results/verify`; nothing under the record's own
results folder is read or written, so no stored prune is reused) at the record's thread count when it has one
(`runtime.torch_threads`: CPU reductions split by thread count move SparseGPT's near-tie masks), and every
metric and the measured sparsity are compared: `identical` (bit for bit), `within` (relative difference ≤ rtol)
or `differs`. Timings (`speed.*`) are shown, never judged. The comparison is written to
`<out>/verify/<identity>.json`. Exit status: 0 all reproduced, 1 a number differs, 2 a run could not be attempted.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from repro.collect.compare.runs import changed_fields, diff_records
from repro.record import dotted_get, dotted_set

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = "results/verify"          # where reruns go unless --out says otherwise (gitignored)
UNJUDGED = ("speed.",)               # metric prefixes that are timings: shown, not compared


@dataclass
class Plan:
    """What a rerun of a record would execute, and why it cannot (problems) if it cannot."""
    cfg: dict
    moved: list = field(default_factory=list)        # [(field, recorded path, path here)]
    problems: list = field(default_factory=list)
    legacy: dict = field(default_factory=dict)       # fields added since the record: the value its code had
    notes: list = field(default_factory=list)
    identity: str | None = None                      # what this code computes for cfg


def _candidates(path: str, maps, root: Path) -> list:
    out = [path]
    out += [new + path[len(old):] for old, new in maps if path.startswith(old)]
    parts = Path(path).parts                   # its tails: /a/b/repro/assets/x -> <root>/b/repro/assets/x, ...
    out += [str(root.joinpath(*parts[i:])) for i in range(1 if Path(path).is_absolute() else 0, len(parts))]
    return list(dict.fromkeys(out))


def locate_inputs(cfg: dict, recorded: dict, maps=(), root: Path = ROOT) -> tuple[list, list]:
    """Point every fingerprinted input of `cfg` (edited in place) at a file here with the recorded content.
    Returns (moved [(field, recorded path, new path)], problems [message])."""
    from repro.fingerprint import input_fingerprints

    moved, problems = [], []
    for key, want in sorted(recorded.items()):
        path = dotted_get(cfg, key)
        if path is None:
            problems.append(f"{key}: the record fingerprints it ({want}) but its config has no such field")
            continue
        found = None
        for candidate in _candidates(str(path), maps, root):
            trial = copy.deepcopy(cfg)
            dotted_set(trial, key, candidate)
            if input_fingerprints(trial).get(key) == want:
                found = candidate
                break
        if found is None:
            problems.append(f"{key}: {path} — no file here has the recorded content {want} (tried the path, "
                            "--map rewrites and its tail under this checkout); pass --map OLD=NEW")
        elif found != str(path):
            dotted_set(cfg, key, found)
            moved.append((key, str(path), found))
    return moved, problems


def plan_rerun(record: dict, out: str | Path = SCRATCH, maps=(), root: Path = ROOT) -> Plan:
    """The config that reruns `record` here (scratch results folder, force, no logger), its inputs located by
    content and its identity recomputed; pure apart from fingerprinting files."""
    from repro.config import ConfigError, load_run_config, to_plain
    from repro.numerics import legacy_fields, record_staleness
    from repro.stages import resolve

    cfg = copy.deepcopy(record.get("config") or {})
    plan = Plan(cfg=cfg)
    if record.get("status") != "ok":
        plan.problems.append(f"status is {record.get('status')!r}: only ok records have numbers to reproduce")
        return plan
    fields = record.get("identity_fields") or {}
    plan.moved, plan.problems = locate_inputs(cfg, fields.get("inputs") or {}, maps, root)
    cfg.setdefault("paths", {})["results"] = str(out)
    cfg["force"], cfg["logger"] = True, None
    try:
        for key, value in legacy_fields(record.get("config") or {}, to_plain(load_run_config(cfg))).items():
            dotted_set(cfg, key, value)
            plan.legacy[key] = value
        run = resolve(cfg)
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        plan.problems.append(f"its config no longer loads here: {str(e).splitlines()[0]}")
        return plan
    plan.identity = run.identity
    if run.identity == record.get("identity") or plan.problems:
        return plan
    changed = {k: (x, y) for k, x, y in changed_fields(fields, run.fields)}
    if changed and set(changed) <= set(plan.legacy):       # only fields added since: the same computation
        plan.notes.append(f"made before {', '.join(sorted(changed))} existed, so today's identity of what it ran "
                          f"is {run.identity} (`repro rekey` moves it and its stored stages; a published record: "
                          "`python -m repro.collect.publish --rekey`)")
        return plan
    listed = ", ".join(f"{k} ({v[0]} -> {v[1]})" for k, v in changed.items())
    plan.problems.append(f"this code computes identity {run.identity}, not {record.get('identity')}: " + (
        record_staleness(record) or f"identity fields differ: {listed}; a config field added since the record "
        "was made belongs in repro/numerics.py ADDED (then `repro rekey`)"))
    return plan


def _numbers(value) -> list | None:
    """A metric as a flat list of floats (a scalar, or nested lists such as a Pareto front); None if not numeric."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            nums = _numbers(v)
            if nums is None:
                return None
            out += nums
        return out
    return None


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(b - a) / abs(a) if a else math.inf


def compare(recorded: dict, rerun: dict, rtol: float = 1e-4) -> list:
    """One row per metric (and the measured sparsity): recorded, rerun, the largest relative difference and the
    verdict: identical | within | differs | missing | timing (shown only). The pairs come from `repro diff`'s
    `diff_records`; lists (a Pareto front) are compared element by element."""
    d = diff_records(recorded, rerun)
    pairs = [(m["metric"], m["a"], m["b"]) for m in d["metrics"]]
    pairs.append(("sparsity.overall", d["sparsity"]["a"], d["sparsity"]["b"]))
    rows = []
    for key, a, b in sorted(pairs):
        row = {"metric": key, "recorded": a, "rerun": b, "rel_delta": None}
        na, nb = _numbers(a), _numbers(b)
        if key.startswith(UNJUDGED):
            row["verdict"] = "timing"
        elif a is None or b is None:
            row["verdict"] = "identical" if a == b else "missing"
        elif na is not None and nb is not None and len(na) == len(nb):
            rel = max((_rel(x, y) for x, y in zip(na, nb)), default=0.0)
            row["rel_delta"] = rel
            row["verdict"] = "identical" if na == nb else "within" if rel <= rtol else "differs"
        else:
            row["verdict"] = "identical" if a == b else "differs"
        rows.append(row)
    return rows


def runtime_notes(recorded: dict, rerun: dict, differs: bool = True) -> list:
    """What was not the same between the two computations, outside the identity (where differences come from;
    `differs`: a number differed, so say too what the record cannot tell)."""
    d = diff_records(recorded, rerun)
    notes = []
    if not recorded.get("runtime") and differs:
        notes.append("the record predates `runtime` (thread count, CPU capability, GPU): CPU reductions split by "
                     "thread count can move near-tie masks, so a small difference may be only that")
    sections = (["runtime"] if recorded.get("runtime") else []) + ["versions"]
    return notes + [f"{s}.{c['field']}: {c['a']} recorded, {c['b']} here" for s in sections for c in d[s]]


def verify(record: dict, out: str | Path = SCRATCH, maps=(), rtol: float = 1e-4,
           threads: int | None = None, dry_run: bool = False, source: str | None = None) -> dict:
    """Plan, then (unless dry_run or the plan has problems) rerun `record` and compare. Returns the report
    (`source`: where the record was read, for the report; default its `run_dir`)."""
    plan = plan_rerun(record, out, maps)
    report = {"record": source or record.get("run_dir"), "identity": record.get("identity"),
              "recomputed": plan.identity, "legacy": plan.legacy, "problems": plan.problems, "rtol": rtol,
              "plan_notes": plan.notes,
              "moved": [{"field": k, "recorded": a, "here": b} for k, a, b in plan.moved]}
    if plan.problems or dry_run:
        report["verdict"] = "not run" if plan.problems else "ready"
        return report
    import torch

    from repro.run import execute

    threads = threads or (record.get("runtime") or {}).get("torch_threads")
    default_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads or default_threads))
    t0 = time.perf_counter()
    try:
        rerun = execute(plan.cfg)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(default_threads)       # the next record of the same call starts from the default
    rows = compare(record, rerun, rtol)
    reproduced = all(r["verdict"] in ("identical", "within", "timing") for r in rows)
    report.update(rerun=rerun.get("run_dir"), wall_s=round(time.perf_counter() - t0, 1), metrics=rows,
                  notes=runtime_notes(record, rerun, differs=not reproduced), threads=used_threads,
                  verdict="reproduced" if reproduced else "differs")
    path = Path(out) / "verify" / f"{record.get('identity')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return report


def format_report(report: dict) -> str:
    lines = [f"verify {report['record']}  (identity {report['identity']})"]
    lines += [f"  input {m['field']}: {m['recorded']} -> {m['here']} (same content)" for m in report["moved"]]
    lines += [f"  field added since: {k} = {v!r} (what its code computed)" for k, v in report["legacy"].items()]
    lines += [f"  note: {n}" for n in report["plan_notes"]]
    lines += [f"  cannot rerun: {p}" for p in report["problems"]]
    if report["recomputed"] == report["identity"]:
        lines.append("  identity recomputed here: the same")
    if "metrics" in report:
        threads = f"{report['threads']} thread" + ("s" if report["threads"] != 1 else "")
        lines.append(f"  rerun: {report['rerun']} ({report['wall_s']} s, {threads})")
        lines.append(f"  {'metric':<28} {'recorded':>14} {'rerun':>14} {'rel Δ':>9}  verdict")
        for r in report["metrics"]:
            rel = "" if r["rel_delta"] is None else f"{r['rel_delta']:.1e}"
            lines.append(f"  {r['metric']:<28} {_short(r['recorded']):>14} {_short(r['rerun']):>14} {rel:>9}  "
                         f"{r['verdict']}")
        lines += [f"  note: {n}" for n in report["notes"]]
    lines.append(f"  => {report['verdict']}")
    return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, default=str)
    return text if len(text) <= 14 else text[:11] + "..."


def _map(item: str) -> tuple:
    old, sep, new = item.partition("=")
    if not sep or not old:
        raise argparse.ArgumentTypeError(f"--map {item!r}: expected OLD=NEW (a path prefix and its replacement)")
    return old, new


def verify_main(argv) -> None:
    from repro.collect.records.load import resolve_run
    from repro.collect.yamlio import DataFileError
    from repro.config import ConfigError

    p = argparse.ArgumentParser(prog="repro verify", description="Rerun recorded runs here from their own config "
                                "and compare every number (module doc: repro/collect/verify.py).")
    p.add_argument("runs", nargs="+", help="run directories, result.json files, or identities under --results")
    p.add_argument("--results", default=os.environ.get("REPRO_RESULTS", "results"),
                   help="where identities are looked up (default $REPRO_RESULTS or results)")
    p.add_argument("--out", default=SCRATCH, help="scratch results folder for the reruns")
    p.add_argument("--map", action="append", type=_map, default=[], metavar="OLD=NEW",
                   help="rewrite a recorded input path prefix (repeatable)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative difference still counted as reproduced")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the record's own)")
    p.add_argument("--dry-run", action="store_true", help="locate inputs and recompute identities only")
    p.add_argument("--json", action="store_true", help="one JSON report per run")
    args = p.parse_args(argv)
    worst = 0
    for arg in args.runs:
        try:
            record = resolve_run(arg, args.results)
        except (ConfigError, DataFileError) as e:
            print(f"repro verify: {e}", file=sys.stderr)
            worst = 2
            continue
        report = verify(record, args.out, args.map, args.rtol, args.threads, args.dry_run, source=arg)
        print(json.dumps(report, default=str) if args.json else format_report(report), flush=True)
        worst = max(worst, 2 if report["problems"] else 1 if report["verdict"] == "differs" else 0)
    sys.exit(worst)
