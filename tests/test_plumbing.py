"""The plumbing every allocator shares: blocks found from `_no_split_modules`, architecture quirks asked of the
adapter, the context's tokenizer and run folder, and hooks that never outlive a pass that raises."""
import copy

import pytest
import torch
import torch.nn as nn

from repro.methods.base import AllocationContext
from repro.models.adapter import adapter_for
from repro.prune import engine
from repro.prune.engine import BlockCallback, HookSet
from repro.registry import build
from tests.conftest import compose_run

FAST = ("model=tiny-llama", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=4", "model.seqlen=32")


def _ids(n=4, seqlen=32):
    return torch.randint(3, 259, (n, seqlen), generator=torch.Generator().manual_seed(0))


def _ctx(model, *overrides, run_dir=None):
    run = compose_run(*FAST, *overrides)
    return AllocationContext(model, adapter_for(model), run, build("score", run.score), _ids(), {}, run_dir)


def _hooks(model):
    """Every forward (pre-)hook on the model (transformers' own output-capturing hooks included: compare counts)."""
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


class _Wrapper(nn.Module):
    """A model that nests its causal LM one level deeper (as a multimodal or custom wrapper does)."""

    def __init__(self, lm, declare=True):
        super().__init__()
        self.lm, self.config = lm, lm.config
        if declare:
            self._no_split_modules = lm._no_split_modules


@pytest.mark.parametrize("fixture,path,cls", [("tiny_llama", "model.layers", "LlamaDecoderLayer"),
                                              ("tiny_opt", "model.decoder.layers", "OPTDecoderLayer")])
def test_blocks_come_from_no_split_modules(fixture, path, cls, request):
    model, _ = request.getfixturevalue(fixture)
    a = adapter_for(model)
    assert set(model._no_split_modules) == {cls}
    found, blocks = a.blocks_with_path(model)
    assert found == path and blocks is model.get_submodule(path) and type(blocks[0]).__name__ == cls
    assert a.block_prefix(1, model) == a.block_prefix(1) == f"{path}.1"
    # a wrapper: the declared path is not there, the block class is found one level deeper
    wrapped = _Wrapper(model)
    assert a.blocks_with_path(wrapped)[0] == f"lm.{path}"
    assert list(a.all_linears(wrapped)) == [f"lm.{n}" for n in a.all_linears(model)]
    assert set(a.block_targets(wrapped, [0.1, 0.2]).values()) == {0.1, 0.2}
    # no block class declared: the family's path is the fallback; neither: a clear error
    bare = copy.copy(model)
    bare._no_split_modules = None
    assert a.blocks(bare) is blocks
    with pytest.raises(ValueError, match=r"no decoder blocks found.*_no_split_modules.*repro/models/adapter.py"):
        a.blocks(_Wrapper(model, declare=False))


def test_unknown_architecture_names_its_block_class(tiny_llama):
    model, _ = tiny_llama
    odd = copy.copy(model)
    odd.config = copy.copy(model.config)
    odd.config.model_type = "gpt2"
    with pytest.raises(ValueError, match=r"model_type='gpt2'.*LlamaDecoderLayer"):
        adapter_for(odd)


def test_mistral_row_quirk_is_the_adapters(tiny_llama):
    from repro.allocation.neuronal import downstream_alignment

    model, _ = tiny_llama
    a = adapter_for(model)
    mistral = copy.copy(model)
    mistral.config = copy.copy(model.config)
    mistral.config.model_type = "mistral"
    assert adapter_for(mistral) is a and a.uniform_rows(model) == ()
    assert a.uniform_rows(mistral) == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    alignment = {n: torch.rand(lin.in_features) for n, lin in a.all_linears(model).items()}
    llama_rows = downstream_alignment(_ctx(model), alignment)
    mistral_rows = downstream_alignment(_ctx(mistral), alignment)
    assert "model.layers.0.self_attn.q_proj" in llama_rows          # q rows = o_proj inputs: a row signal
    assert set(llama_rows) - set(mistral_rows) == {"model.layers.0.self_attn.q_proj"}   # k/v: GQA, uniform anyway


def test_context_carries_the_tokenizer_and_the_run_folder(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    ctx = _ctx(model, run_dir=tmp_path / "run")
    assert ctx.tokenizer is ctx.tokenizer                             # loaded once, lazily
    assert ctx.tokenizer.encode("abc") == tokenizer.encode("abc")
    assert ctx.artifact_dir("lua_llm") == tmp_path / "run" / "lua_llm" and (tmp_path / "run" / "lua_llm").is_dir()


class _Raises(BlockCallback):
    stats = frozenset({"sq_norm"})

    def on_group(self, ctx):
        if ctx.index == 1:
            raise RuntimeError("boom")


def test_a_raising_pass_leaves_no_hooks(tiny_llama):
    model, _ = tiny_llama
    m = copy.deepcopy(model)
    before = _hooks(m)
    with pytest.raises(RuntimeError, match="boom"):
        _ctx(m, "score=wanda").run_pass(_Raises())
    assert _hooks(m) == before
    with pytest.raises(RuntimeError, match="inside"), HookSet() as hooks:
        hooks.add_pre(m.lm_head, lambda mod, args: None)
        assert _hooks(m) == before + 1
        raise RuntimeError("inside")
    assert _hooks(m) == before


def test_neuronal_pass_raising_mid_block_leaves_no_hooks_and_the_dense_weights(tiny_llama, monkeypatch):
    """NeuronAL hooks the pruned block between `on_group` and `after_block`; the engine's re-forward raising in
    between must not leave those hooks (or the candidate's pruned weights) on the model."""
    model, _ = tiny_llama
    m = copy.deepcopy(model)
    before, hooks = {n: lin.weight.clone() for n, lin in adapter_for(m).all_linears(m).items()}, _hooks(m)

    real = engine.forward_block

    def broken(block, inputs, **kwargs):               # the statistics pass runs, the pruned re-forward fails
        if kwargs.get("before_batch") is None:
            raise RuntimeError("re-forward failed")
        return real(block, inputs, **kwargs)
    monkeypatch.setattr(engine, "forward_block", broken)
    ctx = _ctx(m, "score=wanda", "allocation=neuronal", "sparsity=0.7", "allocation.search_nsamples=2")
    with pytest.raises(RuntimeError, match="re-forward failed"):
        build("allocation", ctx.run.allocation).allocate(ctx)
    assert _hooks(m) == hooks
    assert all(torch.equal(lin.weight, before[n]) for n, lin in adapter_for(m).all_linears(m).items())
