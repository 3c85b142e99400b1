"""NeuronAL's search cost relative to one plain Wanda prune of the same model (CPU here; GPU where lent).

    .venv/bin/python benchmarks/neuronal_cost.py                       # SmolLM2-135M, env=offline protocol
    .venv/bin/python benchmarks/neuronal_cost.py model=tiny-llama calib.nsamples=16
    .venv/bin/python benchmarks/neuronal_cost.py model=llama2-7b env=null calib.nsamples=128   # the paper's setting

Measures, on one calibration set: (1) `prune_model` with score=wanda allocation=uniform (the plain prune: one
statistics pass + one pruned re-forward per block over all calibration sequences), (2) the NeuronAL allocation
alone (its λ search: |Λ_block| + |Λ_row| passes over the first `allocation.search_nsamples` sequences), (3) the
full NeuronAL prune (search + final prune). Prints the times, the number of passes and the ratios; append the
output to benchmarks/RESULTS.md by hand (wall-clock on a shared machine is noisy: say so with the numbers).
Reuse between λ candidates: the engine's statistics pass stops each dense block forward at the last hooked linear;
candidates with identical targets are evaluated once; nothing else carries over (every candidate changes the
sparse inputs of all later blocks, so their dense statistics differ too).
"""
from __future__ import annotations

import copy
import sys
import time

import torch


def main(overrides):
    from tests.conftest import compose_run
    from repro.data.calibration import load_calibration
    from repro.methods.base import AllocationContext
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.prune.pipeline import prune_model
    from repro.registry import build

    base = ["model=smollm2-135m", "env=offline", "sparsity=0.7", "calib.nsamples=16", *overrides]
    run = compose_run(*base, "score=wanda", "allocation=uniform")
    model, tok = load_model(run.model)
    calib = load_calibration(run.calib, tok, run.calib.seqlen or run.model.seqlen)
    ids = calib.input_ids
    print(f"model={run.model.name} seqlen={ids.shape[1]} calib={ids.shape[0]} threads={torch.get_num_threads()}")

    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    prune_model(m, adapter_for(m), run, ids)
    wanda_s = time.perf_counter() - t0

    nal = compose_run(*base, "score=wanda", "allocation=neuronal")
    m = copy.deepcopy(model)
    report: dict = {}
    t0 = time.perf_counter()
    build("allocation", nal.allocation).allocate(
        AllocationContext(m, adapter_for(m), nal, build("score", nal.score), ids, report))
    search_s = time.perf_counter() - t0
    passes = report["search_passes"]
    print(f"plain Wanda prune (uniform):      {wanda_s:8.1f} s")
    print(f"NeuronAL search ({passes} passes x {nal.allocation.search_nsamples} seqs): {search_s:8.1f} s "
          f"= {search_s / wanda_s:.1f}x the Wanda prune, {search_s / passes:.2f} s/pass")
    print(f"NeuronAL total (search + final prune) ~ {(search_s + wanda_s) / wanda_s:.1f}x")
    print(f"lambda_block={report['lambda_block']} lambda_row={report['lambda_row']}")


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main(sys.argv[1:])
