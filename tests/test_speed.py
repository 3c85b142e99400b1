"""Inference-speed evaluation: the measurement protocol, kernel choice, config errors, the run record.

No timed assertions (the machine is shared): the tests check what is measured, not how fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_run
from repro.config import ConfigError, SpeedConfig

SMALL = dict(batch_size=2, input_tokens=5, output_tokens=4, warmup=0, repeats=1)


def test_follows_n_of_m_accepts_the_shared_2_4_masks_only():
    from repro.eval.speed import follows_n_of_m
    from repro.prune.masks import prune_lowest_per_row, prune_n_of_m

    w = torch.randn(8, 16)
    two_four = w.masked_fill(prune_n_of_m(w.abs(), 2, 4), 0)
    assert follows_n_of_m(two_four)
    unstructured = w.masked_fill(prune_lowest_per_row(w.abs(), 0.5), 0)   # 50% per row, not per group of 4
    assert (unstructured == 0).float().mean() == 0.5 and not follows_n_of_m(unstructured)
    assert not follows_n_of_m(w) and not follows_n_of_m(torch.zeros(4, 6))  # dense; cols not a multiple of 4


def test_generation_is_one_prefill_then_single_token_decode_steps(tiny_llama):
    from repro.eval.speed import random_prompt, time_generation

    model, _ = tiny_llama
    cfg = SpeedConfig(**SMALL)
    shapes = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: shapes.append((tuple(kwargs["input_ids"].shape), kwargs.get("past_key_values")
                                                 is not None)), with_kwargs=True)
    try:
        prefill_s, decode_s = time_generation(model, random_prompt(cfg, 259, torch.device("cpu")), cfg.output_tokens)
    finally:
        hook.remove()
    assert shapes == [((2, 5), False)] + [((2, 1), True)] * (cfg.output_tokens - 1)
    assert prefill_s > 0 and decode_s > 0


def test_evaluate_speed_on_cpu_reports_throughput_and_dense_kernel(tiny_llama):
    from repro.eval.speed import evaluate_speed

    model, tok = tiny_llama
    threads = torch.get_num_threads()
    metrics, protocol = evaluate_speed(model, tok, SpeedConfig(**SMALL, cpu_threads=1))
    assert protocol["device"]["threads"] == 1 and torch.get_num_threads() == threads   # set while measuring only
    assert metrics["prefill_tok_s"] == pytest.approx(2 * 5 / metrics["prefill_s"])
    assert metrics["decode_tok_s"] == pytest.approx(2 * 3 / metrics["decode_s"])
    assert metrics["generate_tok_s"] == pytest.approx(2 * 4 / (metrics["prefill_s"] + metrics["decode_s"]))
    assert protocol["device"]["type"] == "cpu" and protocol["kernel"] == "dense"
    assert "CUDA only" in protocol["kernel_reason"] and protocol["linears_converted"] == 0
    assert not model.training


def test_kernel_choice_and_errors_on_this_machine(tiny_llama):
    from repro.eval.speed import choose_kernel, semi_structured_weights
    from repro.models.adapter import adapter_for

    model, _ = tiny_llama
    linears = adapter_for(model).all_linears(model)
    cpu = torch.device("cpu")
    assert choose_kernel("dense", linears, cpu, torch.float16) == ("dense", "requested")
    kernel, reason = choose_kernel("auto", linears, cpu, torch.float32)
    assert kernel == "dense" and "not 2:4" in reason and "float32" in reason
    with pytest.raises(ValueError, match="cannot run"):
        choose_kernel("semi_structured", linears, cpu, torch.float16)
    if not torch.cuda.is_available():
        # the conversion fails on CPU: the context manager must leave every dense weight in place
        before = {n: lin.weight for n, lin in linears.items()}
        with pytest.raises(RuntimeError, match="no decoder linear could be converted.*CUDA"):
            with semi_structured_weights(linears):
                pass
        assert all(lin.weight is before[n] for n, lin in linears.items())
        with pytest.raises(ConfigError, match="eval.speed.kernel"):
            from repro.eval.speed import check_speed
            check_speed(compose_run("eval=speed", "eval.speed.kernel=semi_structured").eval.speed)


def test_speed_config_is_typed():
    run = compose_run("eval=speed")
    assert (run.eval.speed.batch_size, run.eval.speed.input_tokens, run.eval.speed.output_tokens) == (8, 32, 256)
    with pytest.raises(ConfigError, match="eval.speed.kernel"):
        compose_run("eval=speed", "eval.speed.kernel=sparse")
    with pytest.raises(ConfigError, match="eval.speed.output_tokens"):
        compose_run("eval=speed", "eval.speed.output_tokens=1")
    with pytest.raises(ConfigError, match="eval.speed.bacth"):
        compose_run("eval=speed", "+eval.speed.bacth=4")


def test_run_records_dense_and_pruned_speed(results_dir):
    from repro.run import execute

    overrides = [f"eval.speed.{k}={v}" for k, v in SMALL.items()]
    run = compose_run("env=offline", "model=tiny-llama", "score=magnitude", "pattern=nm_2_4", "eval=speed",
                      "eval.ppl.max_windows=1", f"paths.results={results_dir}", *overrides)
    record = execute(run)
    saved = json.loads((Path(record["run_dir"]) / "result.json").read_text())
    dense, pruned = saved["metrics"]["speed_dense"], saved["metrics"]["speed"]
    assert pruned["decode_speedup"] == pytest.approx(pruned["decode_tok_s"] / dense["decode_tok_s"])
    assert pruned["prefill_speedup"] == pytest.approx(pruned["prefill_tok_s"] / dense["prefill_tok_s"])
    proto = saved["protocol"]["speed"]
    assert proto["kernel"] == "dense" and proto["batch_size"] == 2 and proto["device"]["type"] == "cpu"
    assert saved["protocol"]["speed_dense"]["kernel"] == "dense"                # the baseline: always dense
    assert saved["protocol"]["speed_dense"]["kernel_reason"] == "requested"
    assert "not 2:4" not in proto["kernel_reason"] and "CUDA only" in proto["kernel_reason"]  # 2:4, but CPU


def test_flat_linear_matches_linear_on_a_decode_step_input_with_odd_strides():
    """The semi-structured path runs each linear on a 2-D view: same values and shape as nn.Linear, also for a
    [B, 1, d] input whose size-1 dimension has a stride matmul cannot fold (what broke on the H100)."""
    from repro.eval.speed import _flat_linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 6, bias=True)
    x = torch.randn(3, 2, 8)[:, -1:]                     # [3, 1, 8] with strides (16, 8, 1): no fold
    assert x.stride(0) != x.stride(1) * x.shape[1]
    y = _flat_linear(lin)(x)
    assert y.shape == (3, 1, 6)
    assert torch.allclose(y, lin(x), atol=1e-6)
