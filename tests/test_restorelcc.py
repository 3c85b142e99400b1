"""RestoreLCC (recovery=restorelcc): fold exactness, export loadable by plain transformers, probe cache keyed by the
pruned model, an end-to-end tiny run with reuse, and the preflight errors."""
import copy
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_run
from repro.config import ConfigError
from repro.recovery._heads import save_folded
from repro.recovery.restorelcc import HeadCompensation, compensate, fold_into_o_proj

TINY = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=restorelcc",
        "recovery.top_heads=4", "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=2",
        "recovery_budget.data.max_length=400", "recovery_budget.data.rows=0:16")


def _pruned(tiny_llama, sparsity=0.5):
    model, tok = tiny_llama
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2 and "layers" in n:
                p[torch.rand(p.shape, generator=g) < sparsity] = 0
    return model, tok


def _zeros(model):
    return {n: int((p == 0).sum()) for n, p in model.named_parameters() if p.dim() == 2}


def test_fold_equals_runtime_add_keeps_zeros_and_reloads_with_plain_transformers(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = _pruned(tiny_llama)
    cfg = model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    g = torch.Generator().manual_seed(1)
    v = torch.linalg.qr(torch.randn(2, d, d, dtype=torch.float64))[0].transpose(1, 2).float()
    comps = {0: HeadCompensation([1, 3], v, cfg.num_attention_heads, 0.5, g),
             1: HeadCompensation([0], v[:1], cfg.num_attention_heads, 0.5, g)}
    ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=g)
    zeros = _zeros(model)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with compensate(model, comps):
            runtime = model(input_ids=ids).logits
    assert not hasattr(model.model.layers[0].self_attn.o_proj, "restorelcc")
    assert all(len(l.self_attn.o_proj._forward_pre_hooks) == 0 for l in model.model.layers)
    assert (runtime - plain).abs().max() > 1e-3                   # the compensation changes the output
    added = fold_into_o_proj(model, {i: dict(zip(m.heads.tolist(), m.comps().detach())) for i, m in comps.items()})
    assert added == 2 * cfg.hidden_size
    with torch.no_grad():
        folded = model(input_ids=ids).logits
    assert ((folded - runtime).norm() / runtime.norm()) < 1e-4
    assert _zeros(model) == zeros                                 # linear weights keep exactly their zeros
    save_folded(model, tok, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert again.config.attention_bias is True
    with torch.no_grad():
        reloaded = again(input_ids=ids).logits
    assert torch.allclose(reloaded, folded, atol=1e-5, rtol=1e-5)
    assert _zeros(again) == zeros


def test_probe_cache_key_changes_with_the_pruned_model_not_with_top_heads():
    from repro.recovery.lcc_probe import probe_key
    from repro.stages import resolve

    wanda, mag = (resolve(compose_run(*TINY, f"score={s}")) for s in ("wanda", "magnitude"))
    more = resolve(compose_run(*TINY, "recovery.top_heads=6", "recovery.training.learning_rate=0.01"))
    assert wanda.prune_id != mag.prune_id
    k = probe_key(wanda.prune_id, wanda.cfg.recovery)
    assert k != probe_key(mag.prune_id, mag.cfg.recovery)        # the reference's key would be equal here
    assert k == probe_key(more.prune_id, more.cfg.recovery)      # selection/training settings reuse the probe
    assert k != probe_key(wanda.prune_id, dataclasses.replace(wanda.cfg.recovery, k=1))


def test_tiny_restorelcc_run_folds_reuses_and_keeps_sparsity(results_dir):
    from repro.run import execute

    rec = execute(compose_run(*TINY, f"paths.results={results_dir}"))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["heads_selected"] == 4 and r["heads_total"] == 8
    assert r["trainable_params"] == 4 * 2 * 16 and r["training"]["steps"] == 2
    assert r["probe"]["negatives"] == "lexical" and "standin" in r["probe"] and r["probe"]["pairs"] == 16
    assert r["probe"]["prune_id"] == rec["pruned_model"]["prune_id"]
    assert r["fold_rel_diff"] < 1e-4 and r["folded_bias_params"] > 0
    assert rec["sparsity_after_recovery"]["overall"] == rec["sparsity"]["overall"]
    workdir = Path(results_dir) / "recovered" / rec["recover_id"]
    assert (workdir / "compensation.safetensors").is_file() and json.loads((workdir / "training.json").read_text())
    again = execute(compose_run(*TINY, f"paths.results={results_dir}", "force=true"))
    assert again["recovery"]["reused_compensation"] is True
    assert again["metrics"]["ppl"] == rec["metrics"]["ppl"]
    other = execute(compose_run(*TINY, f"paths.results={results_dir}", "recovery.top_heads=0.25"))
    assert other["recovery"]["probe"]["reused"] is True and other["recovery"]["heads_selected"] == 2


@pytest.mark.parametrize("override, field", [
    ("recovery.top_heads=9", "recovery.top_heads"),               # tiny-llama: 2 layers x 4 heads
    ("recovery.top_heads=1.5", "recovery.top_heads"),
    ("recovery.k=17", "recovery.k"),                              # head_dim 16
    ("recovery.task=hellaswag", "recovery.task"),
    ("recovery_budget.negatives=random", "recovery.negatives"),
    ("recovery.data.format=text", "recovery.data.format"),
    ("score=dense", "recovery.name"),
])
def test_bad_restorelcc_input_is_refused_before_loading(override, field):
    from repro.run import preflight
    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*TINY, override))
    assert e.value.field_name == field


def test_sbert_negatives_unavailable_offline_is_a_config_error(tmp_path, monkeypatch):
    """The hub id offline, a missing directory, and no sentence-transformers: ConfigErrors before loading (the real
    encoder on a local directory: tests/test_restorelcc_sbert.py)."""
    from repro.run import preflight
    for override in ((), (f"recovery.sbert_model={tmp_path}/none",), ("recovery.sbert_model=./no-such-sbert-dir",)):
        with pytest.raises(ConfigError) as e:                    # env=offline alone picks lexical; ask for sbert
            preflight(compose_run(*TINY, "recovery_budget.negatives=sbert", *override))
        assert e.value.field_name == "recovery.sbert_model"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sentence_transformers"
                        else real(name, *a))
    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*TINY, "recovery_budget.negatives=sbert", f"recovery.sbert_model={tmp_path}"))
    assert e.value.field_name == "recovery.negatives" and "pip install" in str(e.value)


def test_unsupported_model_type_is_refused_before_loading():
    from repro.run import preflight
    preflight(compose_run("model=tiny-opt", *TINY[1:], "recovery.top_heads=2"))          # OPT: supported
    with pytest.raises(ConfigError) as e:                                                  # phi: an adapter, untested
        preflight(compose_run(*TINY, "model.random_init.model_type=phi", "recovery.top_heads=2"))
    assert e.value.field_name == "recovery.name" and "llama, mistral, opt" in str(e.value) and "'phi'" in str(e.value)
