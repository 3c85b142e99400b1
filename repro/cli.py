"""`repro` command line.

    repro run [hydra overrides...] [-m]      one run, or a multirun sweep (same as python -m repro.run)
    repro demo [overrides...]                the README's main job: SmolLM2-135M dense vs pruned, offline
    repro status ...                         the grid of a sweep/experiment with each job's status
    repro tables <paper> ...                 a paper's tables rebuilt from the run records, vs reported numbers
    repro diff <runA> <runB>                 what differs between two runs (config, protocol, metrics)
    repro verify <run>... [--dry-run]        rerun recorded runs here from their own config; compare every number
    repro rekey [--results DIR] [--dry-run]  move records (and stored stages) to today's identities
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function taking the remaining argv). Each owner module parses its own arguments.
COMMANDS = {
    "run": ("repro.cli", "run_main"),
    "demo": ("repro.demo", "demo_main"),
    "status": ("repro.runner.status", "status_main"),
    "tables": ("repro.collect.cli", "tables_main"),
    "diff": ("repro.collect.cli", "diff_main"),
    "verify": ("repro.collect.verify", "verify_main"),
    "rekey": ("repro.collect.rekey", "rekey_main"),
}


def run_main(argv) -> None:
    from repro.run import hydra_main

    sys.argv = ["repro run", *argv]
    hydra_main()


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"repro: unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    module, func = COMMANDS[argv[0]]
    getattr(importlib.import_module(module), func)(argv[1:])


if __name__ == "__main__":
    main()
