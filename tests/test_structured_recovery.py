"""LoRA/DoRA on a structured prune train on the physically smaller model; a diverged fine-tuning fails the run.

Found on SmolLM2 (experiments/restorelcc/NOTES.md, offline proof table): DoRA on SlimGPT's zeroed model gave a NaN
perplexity recorded as ok — its per-output-row weight norm is zero for the removed heads' rows and divides, and
the Trainer's log filter hid the NaN loss — and a dense LoRA delta grows the removed heads back."""
from __future__ import annotations

import math

import pytest

from tests.conftest import compose_run

STRUCT = ("model=tiny-llama", "env=offline", "score=slimgpt", "pattern=structured", "sparsity=0.5",
          "score.min_ratio=0.5", "score.max_ratio=0.5", "eval.ppl.max_windows=1",
          "recovery_budget.training.max_steps=2")


def test_slimming_is_part_of_the_identity_of_structured_lora_only():
    from repro.stages import resolve

    lora = resolve(compose_run(*STRUCT, "recovery=lora"))
    assert lora.fields["recovery_model"] == "slim"
    for other in (compose_run(*STRUCT, "recovery=restorelcc"), compose_run(*STRUCT),
                  compose_run("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=lora")):
        assert "recovery_model" not in resolve(other).fields
    plain = resolve(compose_run(*STRUCT))
    assert lora.prune_id == plain.prune_id               # the same stored prune serves both


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_structured_lora_dora_train_on_the_smaller_model(method, results_dir):
    from repro.run import execute

    rec = execute(compose_run(*STRUCT, f"recovery={method}", f"paths.results={results_dir}"))
    assert rec["status"] == "ok" and math.isfinite(rec["metrics"]["ppl"]["wikitext2"])
    slim = rec["recovery_model"]
    assert slim["form"] == "slim" and slim["block_linear_params_after"] < slim["block_linear_params_before"]
    after = rec["sparsity_after_recovery"]
    assert after["slim_model"] is True
    assert abs(after["overall"] - rec["sparsity"]["overall"]) < 1e-6      # the cut removed exactly the zeroed part
    assert math.isfinite(rec["recovery"]["training"]["train_loss"])


def test_a_non_finite_training_loss_fails_the_run(results_dir, monkeypatch):
    import json
    from pathlib import Path

    import torch

    from repro.run import execute

    real = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=lora",
            "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=2", f"paths.results={results_dir}")
    with pytest.raises(FloatingPointError, match="diverged"):
        execute(compose_run(*args))
    (failed,) = [json.loads(p.read_text()) for p in (Path(results_dir) / "runs").glob("*/result.json")]
    assert failed["status"] == "failed" and failed["error"]["type"] == "FloatingPointError"
