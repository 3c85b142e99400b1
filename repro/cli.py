"""`repro` command line.

    repro run [hydra overrides...] [-m]      one run, or a multirun sweep (same as python -m repro.run)
    repro demo                               the README's main job: SmolLM2-135M dense vs pruned, offline
"""
from __future__ import annotations

import argparse
import sys


def _run(argv):
    from repro.run import hydra_main

    sys.argv = ["repro run", *argv]
    hydra_main()


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        return _run(argv[1:])
    parser = argparse.ArgumentParser(prog="repro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run one experiment or a sweep (Hydra overrides follow)")
    demo = sub.add_parser("demo", help="SmolLM2-135M dense vs pruned on the bundled text (offline, CPU)")
    demo.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. sparsity=0.6")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from repro.demo import demo as run_demo
        run_demo(args.overrides)


if __name__ == "__main__":
    main()
