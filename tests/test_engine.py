"""The calibration engine on the tiny random models (transformers 5.x): kwargs replay, what each block reads
(pruned vs dense inputs), true-sequential groups, shared statistics, the Hessian's running form, NaN reports,
CPU offload, and the bad-input checks that run before the model is loaded."""
import copy
import math

import pytest
import torch

from repro.config import ConfigError, EngineConfig
from repro.models.adapter import adapter_for
from repro.prune.engine import BlockCallback, CalibrationEngine, capture_block_inputs, forward_block
from repro.prune.stats import LayerStats
from repro.run import execute, preflight
from tests.conftest import compose_cfg, compose_run


def _ids(n=5, seqlen=24, seed=0):
    return torch.randint(0, 250, (n, seqlen), generator=torch.Generator().manual_seed(seed))


class Recorder(BlockCallback):
    """Keeps each group's statistics; optionally prunes with `prune(ctx)`."""

    def __init__(self, kinds=("sq_norm",), prune=None):
        self.stats = frozenset(kinds)
        self.prune, self.seen, self.order = prune, {}, []

    def on_group(self, ctx):
        self.order.append((ctx.index, tuple(ctx.linears)))
        for name in ctx.linears:
            self.seen[(ctx.index, name)] = ctx.stats[name]
        if self.prune:
            self.prune(ctx)


def _linear_inputs(model, ids):
    """Independent: run the whole model once with plain hooks and keep every linear's input, per full name."""
    adapter, seen, handles = adapter_for(model), {}, []
    for name, lin in adapter.all_linears(model).items():
        handles.append(lin.register_forward_hook(lambda m, a, o, n=name: seen.setdefault(n, []).append(a[0])))
    with torch.no_grad():
        model(ids, use_cache=False)
    for h in handles:
        h.remove()
    return {n: torch.cat(v) for n, v in seen.items()}


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_opt"])
def test_replayed_kwargs_reproduce_the_models_own_block_outputs(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    adapter, ids = adapter_for(model), _ids()
    inputs = capture_block_inputs(model, adapter, ids, batch_size=2)          # batches of 2, 2, 1
    assert sorted(inputs.call_kwargs) == [1, 2]
    if fixture == "tiny_llama":
        assert "position_embeddings" in inputs.call_kwargs[2]                 # rotary cos/sin replayed
    outs = torch.cat(forward_block(adapter.blocks(model)[0], inputs))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True, use_cache=False).hidden_states[1]
    torch.testing.assert_close(outs, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_opt"])
def test_statistics_equal_plain_hooks_and_shared_inputs_share_one_object(fixture, request):
    model, _ = request.getfixturevalue(fixture)
    adapter, ids = adapter_for(model), _ids()
    rec = Recorder(kinds=("sq_norm", "hessian"))
    CalibrationEngine(model, adapter, EngineConfig(), ids, batch_size=2, progress=False).run(rec)
    inputs = _linear_inputs(model, ids)          # dense model, dense inputs: the block-0 statistics must agree
    for name in adapter.linear_names:
        xf = inputs[f"{adapter.block_prefix(0)}.{name}"].double()
        xf = xf.reshape(-1, xf.shape[-1])                      # OPT's fc1/fc2 see 2-D inputs
        torch.testing.assert_close(rec.seen[(0, name)]["sq_norm"].double(), (xf ** 2).sum(0) / 5,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rec.seen[(0, name)]["hessian"].double(), 2 / 5 * xf.t() @ xf,
                                   rtol=1e-4, atol=1e-5)
    s = {n: rec.seen[(0, n)] for n in adapter.linear_names}
    if fixture == "tiny_llama":
        assert s["self_attn.q_proj"] is s["self_attn.k_proj"] is s["self_attn.v_proj"]
        assert s["mlp.gate_proj"] is s["mlp.up_proj"]
        assert len({id(v) for v in s.values()}) == 4
    else:
        assert s["self_attn.k_proj"] is s["self_attn.v_proj"] is s["self_attn.q_proj"]
        assert len({id(v) for v in s.values()}) == 4


def _zero_first_half(ctx):
    for lin in ctx.linears.values():
        lin.weight.data[:, : lin.weight.shape[1] // 2] = 0


@pytest.mark.parametrize("propagate", ["pruned", "dense"])
def test_next_block_reads_pruned_or_dense_outputs(propagate, tiny_llama):
    dense = tiny_llama[0]
    model, ids = copy.deepcopy(dense), _ids()
    adapter = adapter_for(model)
    rec = Recorder(prune=_zero_first_half)
    CalibrationEngine(model, adapter, EngineConfig(propagate=propagate), ids, 2, progress=False).run(rec)
    # Block 1's q_proj input, computed independently: block 0 pruned (the model after the run, whose block 1 is
    # also pruned but block 1 does not change its own input) or block 0 dense (the untouched model).
    source = model if propagate == "pruned" else dense
    x = _linear_inputs(source, ids)[f"{adapter.block_prefix(1)}.self_attn.q_proj"]
    torch.testing.assert_close(rec.seen[(1, "self_attn.q_proj")]["sq_norm"], (x ** 2).sum((0, 1)) / 5,
                               rtol=1e-5, atol=1e-6)
    other = _linear_inputs(dense if propagate == "pruned" else model, ids)[f"{adapter.block_prefix(1)}.self_attn.q_proj"]
    assert not torch.allclose(rec.seen[(1, "self_attn.q_proj")]["sq_norm"], (other ** 2).sum((0, 1)) / 5)


@pytest.mark.parametrize("true_sequential", [True, False])
def test_true_sequential_groups_see_earlier_groups_pruned(true_sequential, tiny_llama):
    model = copy.deepcopy(tiny_llama[0])
    adapter = adapter_for(model)

    def zero_v(ctx):
        if "self_attn.v_proj" in ctx.linears:
            ctx.linears["self_attn.v_proj"].weight.data.zero_()

    rec = Recorder(prune=zero_v)
    CalibrationEngine(model, adapter, EngineConfig(true_sequential=true_sequential), _ids(), 2,
                      progress=False).run(rec)
    o_stats = rec.seen[(0, "self_attn.o_proj")]["sq_norm"]
    if true_sequential:
        assert [g for i, g in rec.order if i == 0] == [tuple(g) for g in adapter.sequential_groups]
        assert torch.count_nonzero(o_stats) == 0              # v = 0 → attention output 0 → o_proj input 0
    else:
        assert [g for i, g in rec.order if i == 0] == [adapter.linear_names]
        assert torch.count_nonzero(o_stats) > 0


def test_hessian_sum_form_equals_the_running_rescaled_form():
    torch.manual_seed(0)
    batches = [torch.randn(b, 7, 12) * 3 for b in (1, 3, 1, 2)]
    running, n = torch.zeros(12, 12), 0
    for x in batches:                                          # the reference's add_batch, step by step
        running *= n / (n + x.shape[0])
        n += x.shape[0]
        xs = math.sqrt(2 / n) * x.reshape(-1, 12).t().float()
        running += xs @ xs.t()
    st = LayerStats({"hessian", "sq_norm"})
    for x in batches:
        st.add(x.reshape(-1, 12), nseq=x.shape[0])
    torch.testing.assert_close(st["hessian"], running, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(st["sq_norm"], torch.diagonal(running) / 2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("d", [576, 1000])
def test_cpu_gram_by_upper_strips_is_bit_identical_to_the_full_product(d):
    from repro.prune.stats import GRAM_CHUNK, _gram
    assert round(d / GRAM_CHUNK) >= 2                           # the strip path runs
    x = torch.randn(300, d)
    assert torch.equal(_gram(x, torch.float32), x.t() @ x)


def test_batch_size_does_not_change_statistics(tiny_opt):
    model, _ = tiny_opt
    adapter, ids = adapter_for(model), _ids(n=4)
    a, b = Recorder(), Recorder()
    CalibrationEngine(model, adapter, EngineConfig(), ids, 1, progress=False).run(a)
    CalibrationEngine(model, adapter, EngineConfig(), ids, 3, progress=False).run(b)
    for key in a.seen:
        torch.testing.assert_close(a.seen[key]["sq_norm"], b.seen[key]["sq_norm"], rtol=1e-5, atol=1e-6)


def test_nan_in_statistics_names_block_and_layer(tiny_llama):
    model = copy.deepcopy(tiny_llama[0])
    adapter = adapter_for(model)
    adapter.blocks(model)[1].self_attn.v_proj.weight.data[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"model\.layers\.1\.self_attn\.o_proj.*block 1"):
        CalibrationEngine(model, adapter, EngineConfig(), _ids(), 2, progress=False).run(Recorder())


def test_nan_in_pruned_weights_names_block_and_layer(tiny_llama):
    model = copy.deepcopy(tiny_llama[0])

    def break_down(ctx):
        if ctx.index == 0:
            ctx.linears["mlp.down_proj"].weight.data[0, 0] = float("inf")

    with pytest.raises(FloatingPointError, match=r"model\.layers\.0\.mlp\.down_proj \(block 0, layer mlp\.down_proj\)"):
        CalibrationEngine(model, adapter_for(model), EngineConfig(), _ids(), 2,
                          progress=False).run(Recorder(prune=break_down))


def test_offload_path_gives_the_same_masks_and_keeps_activations_on_cpu(tiny_llama):
    results = []
    for offload in (False, True):
        model = copy.deepcopy(tiny_llama[0])
        devices = []

        def prune(ctx, devices=devices):
            devices.append({b.device.type for b in ctx.inputs.batches})
            _zero_first_half(ctx)

        CalibrationEngine(model, adapter_for(model), EngineConfig(offload=offload, device="cpu"), _ids(), 2,
                          progress=False).run(Recorder(prune=prune))
        results.append([lin.weight.data.clone() for lin in adapter_for(model).all_linears(model).values()])
        assert devices and all(d == {"cpu"} for d in devices)
        assert model.get_input_embeddings().weight.device.type == "cpu"
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("overrides,field", [
    (("calib.seqlen=1024",), "calib.seqlen"),                  # tiny-llama max_position_embeddings = 512
    (("model.seqlen=600",), "model.seqlen"),
    (("calib.name=none",), "calib"),
    (("calib.nsamples=0",), "calib.nsamples"),
    (("pattern=nm_2_4", "sparsity=0.6"), "sparsity"),
])
def test_bad_input_fails_before_the_model_is_loaded(overrides, field, results_dir, monkeypatch):
    import repro.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    with pytest.raises(ConfigError) as e:
        execute(compose_cfg("env=offline", "model=tiny-llama", "score=wanda", *overrides,
                            f"paths.results={results_dir}"))
    assert e.value.field_name == field


def test_engine_config_rejects_unknown_device():
    with pytest.raises(ConfigError, match="engine.device"):
        compose_run("engine.device=tpu")
    preflight(compose_run("env=offline", "model=tiny-llama", "engine=offload", "engine.device=cpu"))


def test_freeing_inputs_during_the_re_forward_changes_nothing(tiny_llama):
    class Consuming(Recorder):
        needs_inputs_after_block = False

        def after_block(self, ctx, outputs):
            self.spent = all(b is None for b in ctx.inputs.batches)

    runs = []
    for cls in (Recorder, Consuming):
        model = copy.deepcopy(tiny_llama[0])
        rec = cls(prune=_zero_first_half)
        CalibrationEngine(model, adapter_for(model), EngineConfig(), _ids(), 2, progress=False).run(rec)
        runs.append(rec)
    assert runs[1].spent
    for key, stats in runs[0].seen.items():
        assert torch.equal(stats["sq_norm"], runs[1].seen[key]["sq_norm"])
