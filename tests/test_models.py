"""Model loading and the architecture adapters (LLaMA family, OPT), on tiny random models."""
import pytest
import torch

from repro.config import ConfigError
from repro.models.adapter import adapter_for, adapter_for_model_type
from repro.models.loading import load_model, model_seqlen
from repro.prune.pipeline import measure_sparsity
from repro.run import execute
from tests.conftest import compose_cfg, compose_run


def test_llama_adapter_finds_blocks_and_linears_in_reference_order(tiny_llama):
    model, _ = tiny_llama
    a = adapter_for(model)
    assert a.family == "llama" and len(a.blocks(model)) == 2
    names = list(a.all_linears(model))
    assert names[:7] == [f"model.layers.0.{n}" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    assert a.all_linears(model)["model.layers.1.self_attn.k_proj"].weight.shape == (32, 64)  # GQA: 2 KV heads


def test_opt_adapter_lists_k_v_q_first(tiny_opt):
    model, _ = tiny_opt
    a = adapter_for(model)
    assert a.family == "opt"
    assert list(a.linears(a.blocks(model)[0])) == ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj",
                                                   "self_attn.out_proj", "fc1", "fc2"]


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "opt", "phi"])
def test_known_families(model_type):
    assert adapter_for_model_type(model_type)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model_type='gpt2'.*llama.*opt.*ArchAdapter"):
        adapter_for_model_type("gpt2")


def test_random_init_is_seeded_and_typed():
    cfg = compose_run("model=tiny-llama", "model.dtype=bfloat16").model
    m1, tok = load_model(cfg, seed=0)
    m2, _ = load_model(cfg, seed=0)
    assert next(m1.parameters()).dtype == torch.bfloat16
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert tok("ab").input_ids == [tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b")]


def test_seqlen_longer_than_the_context_is_rejected(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ConfigError, match="model.seqlen.*512"):
        model_seqlen(model, compose_run("model=tiny-llama", "model.seqlen=4096").model)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-opt"])
@pytest.mark.parametrize("pattern,overrides,check", [
    ("row", ["score.granularity=row", "sparsity=0.6"], "row"),
    ("layer", ["score.granularity=layer", "sparsity=0.6"], "layer"),
    ("2:4", ["pattern=nm_2_4", "sparsity=0.5"], "nm"),
])
def test_magnitude_end_to_end(model, pattern, overrides, check, results_dir):
    rec = execute(compose_cfg(f"model={model}", "env=offline", "score=magnitude", "eval.ppl.max_windows=1",
                              f"paths.results={results_dir}", *overrides))
    assert rec["status"] == "ok"
    m, _ = load_model(compose_run(f"model={model}").model)
    per_layer = rec["sparsity"]["per_layer"]
    for name, lin in adapter_for(m).all_linears(m).items():
        cols = lin.weight.shape[1]
        if check == "row":   # exactly int(cols * 0.6) zeros per row
            assert per_layer[name] == pytest.approx(int(cols * 0.6) / cols)
        elif check == "layer":   # one threshold per matrix: <= prunes int(numel*0.6) + ties
            assert 0.6 <= per_layer[name] < 0.6 + 2 / lin.weight.numel()
        else:
            assert per_layer[name] == 0.5
    assert rec["sparsity"]["overall"] == pytest.approx(
        sum(per_layer[n] * l.weight.numel() for n, l in adapter_for(m).all_linears(m).items())
        / sum(l.weight.numel() for l in adapter_for(m).all_linears(m).values()))


def test_measure_sparsity_counts_exact_zeros(tiny_opt):
    model, _ = tiny_opt
    a = adapter_for(model)
    lin = a.all_linears(model)["model.decoder.layers.0.fc1"]
    saved = lin.weight.data.clone()
    lin.weight.data[:, :32] = 0
    try:
        assert measure_sparsity(model, a)["per_layer"]["model.decoder.layers.0.fc1"] == 0.5
    finally:
        lin.weight.data.copy_(saved)


def test_unknown_architecture_fails_in_preflight_before_loading(tmp_path):
    import json

    from repro.run import preflight

    with pytest.raises(ValueError, match="model_type='gpt2'"):
        preflight(compose_run("model=tiny-llama", "model.random_init.model_type=gpt2"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        preflight(compose_run("model=llama2-7b", f"model.path={tmp_path}"))


def test_gguf_tokenizer_fix_restores_special_tokens_from_the_header():
    """transformers 4.4x converts SmolLM2's GGUF tokenizer with eos = bos; the header's ids win."""
    from repro.models.loading import _fix_gguf_tokenizer
    from repro.models.tokenizers import byte_tokenizer

    tok = byte_tokenizer()
    _fix_gguf_tokenizer(tok, {"bos_token_id": 257, "eos_token_id": 256, "add_bos_token": False})
    assert (tok.bos_token_id, tok.eos_token_id) == (257, 256)
    _fix_gguf_tokenizer(tok, {"bos_token_id": None, "eos_token_id": None, "add_bos_token": None})
    assert (tok.bos_token_id, tok.eos_token_id) == (257, 256)
