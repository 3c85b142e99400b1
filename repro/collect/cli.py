"""`repro tables` and `repro diff` (dispatched from repro/cli.py).

    repro tables owl                                   # Markdown of every OWL table to stdout
    repro tables wanda --table readme_llama2 --format latex
    repro tables all --format all --out results/tables # md, tex, csv and html for every paper
    repro tables restorelcc --tol zeroshot.abs=2 --results results --results /data/more_results
    repro tables wanda --stand-in smollm2-135m=llama2-7b   # count SmolLM2 runs in LLaMA-2-7B cells (flagged)
    repro diff <runA> <runB> [--json]

User mistakes (a malformed reported.yaml, a layout naming an unknown field, a missing results directory, an
unknown paper or table) print one clear message and exit 2, without a stack trace.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from repro.collect.cells.paper import EXPERIMENTS_DIR, papers
from repro.collect.compare.paper import build_paper
from repro.collect.records.load import load_records
from repro.collect.vocab import DEFAULT_TOLERANCES
from repro.collect.yamlio import DataFileError
from repro.config import ConfigError

FORMATS = ("md", "latex", "csv", "html")
EXTENSIONS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}


def _fail(prog: str, err: Exception) -> None:
    print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(2)


def parse_tolerances(items) -> dict:
    out: dict = {}
    for item in items or []:
        key, _, value = item.partition("=")
        fam, _, kind = key.partition(".")
        try:
            v = float(value)
        except ValueError:
            v = None
        if fam not in DEFAULT_TOLERANCES or kind not in ("abs", "rel", "close") or v is None or v < 0:
            raise ConfigError("--tol", item, "FAMILY.KIND=VALUE with FAMILY in " + ", ".join(DEFAULT_TOLERANCES)
                              + " and KIND in abs, rel, close (e.g. ppl.rel=0.05)")
        out.setdefault(fam, {})[kind] = v
    return out


def parse_stand_ins(items) -> dict:
    out = {}
    for item in items or []:
        src, _, dst = item.partition("=")
        if not src or not dst:
            raise ConfigError("--stand-in", item, "RUN_MODEL=PAPER_MODEL (e.g. smollm2-135m=llama2-7b)")
        out[src] = dst
    return out


def render(result, fmt: str) -> str:
    from repro.collect.render import text as r

    if fmt == "md":
        return r.paper_markdown(result)
    if fmt == "latex":
        return r.paper_latex(result)
    if fmt == "csv":
        return r.paper_csv(result)
    from repro.collect.render.html import paper_html

    return paper_html(result)


def tables_main(argv) -> None:
    p = argparse.ArgumentParser(prog="repro tables", description="A paper's tables rebuilt from the run records, "
                                "reproduced vs reported, with a verdict per cell.")
    p.add_argument("paper", help="a directory name under experiments/ (e.g. owl, wanda), or 'all'")
    p.add_argument("--table", action="append", help="only this table (repeatable)")
    p.add_argument("--format", default="md", choices=FORMATS + ("all",))
    p.add_argument("--results", action="append",
                   help="results directory (repeatable; default: $REPRO_RESULTS or results)")
    p.add_argument("--out", help="write <out>/<paper>/<table>.{md,tex,csv} and <out>/<paper>.html instead of stdout")
    p.add_argument("--tol", action="append", metavar="FAMILY.KIND=VALUE", help="tolerance override, e.g. ppl.rel=0.05")
    p.add_argument("--stand-in", action="append", metavar="RUN_MODEL=PAPER_MODEL",
                   help="count one model's runs in another model's cells, flagged as a protocol difference")
    p.add_argument("--experiments", default=str(EXPERIMENTS_DIR), help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        tol = parse_tolerances(args.tol)
        stand_ins = parse_stand_ins(args.stand_in)
        if args.paper == "all" and args.table:
            raise ConfigError("--table", args.table, "no --table with 'all' (tables belong to one paper)")
        names = papers(Path(args.experiments)) if args.paper == "all" else [args.paper]
        recs = load_records(args.results or [os.environ.get("REPRO_RESULTS", "results")])
        if not recs.records:
            print(f"repro tables: no usable run record under {', '.join(map(str, recs.roots))} "
                  f"({len(recs.skipped)} skipped); the tables show reported numbers only. Make some with "
                  "`repro demo` or `repro run ...`.", file=sys.stderr)
        for path, reason in recs.skipped:
            if not reason.startswith("status"):
                print(f"repro tables: skipped {path}: {reason}", file=sys.stderr)
        formats = list(FORMATS) if args.format == "all" else [args.format]
        if args.format == "all" and not args.out:
            raise ConfigError("--format", "all", "a single format when writing to stdout", "Add --out DIR.")
        index = []
        for name in names:
            result = build_paper(name, recs, Path(args.experiments), tolerances=tol,
                                 tables=args.table, stand_ins=stand_ins)
            index += [f"| [{name}]({name}.html) | [{t}]({name}/{t}.md) | {tr.coverage} |"
                      for t, tr in result.tables.items()]
            for fmt in formats:
                if args.out:
                    for path in write_outputs(result, fmt, Path(args.out)):
                        print(path)
                else:
                    sys.stdout.write(render(result, fmt))
        if args.out:
            path = Path(args.out) / "index.md"
            path.write_text(f"# Coverage of the encoded paper tables\n\n{len(recs)} run records from "
                            f"{', '.join(map(str, recs.roots))}.\n\n| paper | table | coverage |\n|---|---|---|\n"
                            + "\n".join(index) + "\n")
            print(path)
    except (ConfigError, DataFileError) as e:
        _fail("repro tables", e)


def write_outputs(result, fmt: str, out: Path) -> list:
    """md/latex/csv: one file per table under <out>/<paper>/ plus the whole paper; html: <out>/<paper>.html."""
    from repro.collect.render import text as r

    written = []
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        path = out / f"{result.paper}.html"
        path.write_text(render(result, "html"))
        return [path]
    d = out / result.paper
    d.mkdir(parents=True, exist_ok=True)
    frame = r.cells_frame(result) if fmt == "csv" else None
    for name, t in result.tables.items():
        if fmt == "csv":
            text = frame[frame["table"] == name].to_csv(index=False)
        else:
            text = r.table_markdown(t, result.paper) if fmt == "md" else r.table_latex(t, result.paper)
        path = d / f"{name}.{EXTENSIONS[fmt]}"
        path.write_text(text)
        written.append(path)
    path = d / f"all.{EXTENSIONS[fmt]}"
    path.write_text(render(result, fmt))
    return written + [path]


def diff_main(argv) -> None:
    from repro.collect.compare.runs import diff_records
    from repro.collect.records.load import resolve_run
    from repro.collect.render.diff import format_diff

    p = argparse.ArgumentParser(prog="repro diff", description="What differs between two runs: config, protocol "
                                "fingerprint, metrics, versions.")
    p.add_argument("run_a", help="run directory, result.json, or identity (prefix)")
    p.add_argument("run_b")
    p.add_argument("--results", default=os.environ.get("REPRO_RESULTS", "results"),
                   help="where identities are looked up (<results>/runs/; default $REPRO_RESULTS or results)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    try:
        d = diff_records(resolve_run(args.run_a, args.results), resolve_run(args.run_b, args.results))
    except (ConfigError, DataFileError) as e:
        _fail("repro diff", e)
    print(json.dumps(d, indent=2, default=str) if args.json else format_diff(d))
