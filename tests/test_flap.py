"""FLAP bias compensation (repro/recovery/flap.py): FLAP's formula for removed channels, the mean-output
invariant on the dense inputs, and a tiny run that keeps the zeros."""
from __future__ import annotations

import torch

from repro.recovery.flap import compensation_bias
from tests.conftest import compose_run


def test_structured_removal_gives_flaps_formula_and_the_dense_mean_output():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=g)
    x = torch.randn(100, 8, generator=g) + torch.linspace(-2, 2, 8)          # inputs with non-zero means
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 0], dtype=torch.bool)
    pruned = w * keep
    b = compensation_bias(w, pruned, x.mean(0)).float()
    flap = (x.mean(0) * ~keep) @ w.t()                       # FLAP lib/prune.py compress: (mean_inp * ~mask) @ W.T
    assert torch.allclose(b, flap, atol=1e-5)
    # any pruning error (here unstructured, with changed kept weights): E[W_p x + b] = E[W_d x]
    pruned = torch.where(torch.rand(w.shape, generator=g) < 0.5, torch.zeros_like(w), w * 1.1)
    b = compensation_bias(w, pruned, x.mean(0)).float()
    assert torch.allclose((x @ pruned.t() + b).mean(0), (x @ w.t()).mean(0), atol=1e-5)


def test_flap_run_adds_biases_keeps_the_zeros_and_reuses(results_dir):
    from repro.run import execute
    args = ("model=tiny-llama", "env=offline", "score=sparsegpt", "pattern=nm_2_4", "sparsity=0.5", "recovery=flap",
            "eval.ppl.max_windows=1", f"paths.results={results_dir}")
    rec = execute(compose_run(*args))
    assert rec["status"] == "ok" and rec["recovery"]["linears"] == 4 and rec["recovery"]["bias_norm_mean"] > 0
    assert rec["sparsity_after_recovery"] == rec["sparsity"]
    again = execute(compose_run(*args, "force=true"))
    assert again["recovery"]["reused_biases"] is True and again["metrics"]["ppl"] == rec["metrics"]["ppl"]
