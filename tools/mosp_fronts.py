"""Save the collector's Pareto-front figures (one PNG per two-objective setting) and print its fronts table.

    python tools/mosp_fronts.py --results results --out experiments/mosp
    python tools/mosp_fronts.py --results results/published --out /tmp/fronts

The figures and the table are the ones `repro tables mosp --format html` embeds (repro/collect/pareto.py: hypervolume
reference from the SparseGPT Extension-1 record of each setting); this only writes them to files, for NOTES.md.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def main(argv=None) -> list:
    from repro.collect.compare.pareto import annotate, fronts
    from repro.collect.records.load import load_records
    from repro.collect.render.pareto import figures, markdown

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", action="append", help="results directory (repeatable; default: results)")
    ap.add_argument("--out", required=True, help="folder for the PNGs")
    args = ap.parse_args(argv)
    recs = load_records([Path(r) for r in (args.results or ["results"])]).records
    fr = fronts(annotate(recs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for title, fig in figures(fr):
        name = "fronts_" + re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") + ".png"
        fig.savefig(out / name, dpi=130)
        written.append(out / name)
    sys.stdout.write(markdown(fr))
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
