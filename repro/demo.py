"""The README's main job: SmolLM2-135M dense vs magnitude and Wanda at 50%, bundled WikiText-2 slice, offline.

Each row is an ordinary run (its own record under results/runs/); a second call reuses the records.
"""
from __future__ import annotations

import logging
import time

from hydra import compose, initialize_config_dir

from repro.run import CONF_DIR, execute

DEMO_METHODS = (("score=dense",), ("score=magnitude",), ("score=wanda", "calib.nsamples=16"))


def demo(extra_overrides=()) -> list:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    records = []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for method in DEMO_METHODS:
            t = time.perf_counter()
            cfg = compose("config", overrides=["env=offline", *method, *extra_overrides])
            rec = execute(cfg)
            rec["_wall_s"] = time.perf_counter() - t
            records.append(rec)
    print(format_table(records))
    return records


def format_table(records, published: bool = False) -> str:
    """The demo's table. `published`: wall time from the record (total_s) and run folders by identity, so the
    README block (repro/collect/publish.py) depends on the records only, not on where they were made."""
    from repro.collect.vocab import prunes

    dense = next((r for r in records if not prunes(r["config"]["score"]["name"])), None)
    d_ppl = (dense or {}).get("metrics", {}).get("ppl", {}).get("wikitext2")
    lines = ["", "| method | sparsity (target) | sparsity (measured) | WikiText-2 ppl* | vs dense | wall s |",
             "|---|---|---|---|---|---|"]
    for r in records:
        cfg = r["config"]
        name = cfg["score"]["name"]
        target = f"{cfg['sparsity']:.0%} {cfg['pattern']['name']}" if prunes(name) else "-"
        ppl = r["metrics"]["ppl"]["wikitext2"]
        ratio = f"x{ppl / d_ppl:.2f}" if d_ppl else "-"
        if published:
            wall = f"{r['timings']['total_s']:.0f}"
        else:
            wall = "cached" if r.get("skipped") else f"{r['_wall_s']:.0f}"
        lines.append(f"| {name} | {target} | {r['sparsity']['overall']:.4f} | {ppl:.2f} | {ratio} | {wall} |")
    fp = records[0]["protocol"]["ppl"]["wikitext2"]
    where = ", ".join(f"results/runs/{r['identity']}" if published else r["run_dir"] for r in records)
    lines.append(f"\n*{fp['windows']} windows x {fp['seqlen']} tokens of the bundled WikiText-2 test slice "
                 f"(not the full-split protocol). Records: {where}")
    return "\n".join(lines)


def demo_main(argv) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="repro demo", description=__doc__)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. sparsity=0.6")
    demo(p.parse_args(argv).overrides)
