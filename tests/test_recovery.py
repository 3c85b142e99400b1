"""Recovery axis: masked LoRA exactness, instruction data protocols, preflight errors, LoRA/DoRA/masked LoRA runs."""
import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_run
from repro.config import ConfigError


def _pruned_copy(tiny_llama, sparsity=0.6, seed=0):
    model, tok = tiny_llama
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2 and "layers" in n:
                p[torch.rand(p.shape, generator=g) < sparsity] = 0
    return model, tok


def _masked_peft(model, r=4):
    import peft

    from repro.recovery.masked_lora import masked_layers, masked_lora_config
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    pm = peft.get_peft_model(model, masked_lora_config(r=r, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    torch.manual_seed(1)
    for _, m in masked_layers(model):
        torch.nn.init.normal_(m.lora_B["default"].weight)     # a non-zero delta
    return pm


def _bases(model):
    from repro.recovery.masked_lora import masked_layers
    return {n: m.get_base_layer().weight.detach().clone() for n, m in masked_layers(model)}


def test_masked_lora_merge_unmerge_keep_the_zeros_bit_for_bit(tiny_llama):
    model, _ = _pruned_copy(tiny_llama)
    pm = _masked_peft(model)
    pm.eval()
    before = _bases(model)
    ids = torch.randint(0, 200, (2, 16))
    y_unmerged = model(ids).logits
    pm.merge_adapter()
    merged = _bases(model)
    for n, w in before.items():
        assert torch.equal(merged[n] == 0, w == 0), n                        # no zero filled, none created
        assert not torch.equal(merged[n], w), n                              # the delta did land
    assert torch.allclose(model(ids).logits, y_unmerged, atol=1e-4)          # masked forward == merged weights
    pm.unmerge_adapter()
    for n, w in _bases(model).items():
        assert torch.equal(w == 0, before[n] == 0)
        assert torch.allclose(w, before[n], atol=1e-6)
    zeros_before = {n.split("base_model.model.", 1)[-1]: w == 0 for n, w in before.items()}
    base = pm.merge_and_unload()
    from repro.models.adapter import adapter_for
    for name, lin in adapter_for(base).all_linears(base).items():
        assert type(lin) is torch.nn.Linear
        assert torch.equal(lin.weight == 0, zeros_before[name]), name


def test_masked_lora_gradients_and_active_rank(tiny_llama):
    model, _ = _pruned_copy(tiny_llama)
    pm = _masked_peft(model, r=4)
    from repro.recovery.masked_lora import masked_layers
    name, layer = masked_layers(model)[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    layer.active_rank = 2
    expected = (b[:, :2] @ a[:2]) * (layer.get_base_layer().weight != 0) * layer.scaling["default"]
    assert torch.allclose(layer.get_delta_weight("default"), expected)
    layer.active_rank = 9                                                    # above the adapter's r: no-op slice
    assert torch.allclose(layer.get_delta_weight("default"),
                          (b @ a) * (layer.get_base_layer().weight != 0) * layer.scaling["default"])
    pm.train()
    model(torch.randint(0, 200, (1, 8))).logits.sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_zero_fractions_dense_lora_is_not_sparse(tiny_llama):
    import peft

    from repro.recovery.base import weight_zero_fractions
    model, _ = _pruned_copy(tiny_llama, sparsity=0.5)
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for m in model.modules():
        if hasattr(m, "lora_B") and "default" in getattr(m, "lora_B", {}):
            torch.nn.init.normal_(m.lora_B["default"].weight)
    z = weight_zero_fractions(model)
    assert 0.45 < z["base_zero_fraction"] < 0.55 and z["effective_zero_fraction"] == 0.0
    assert pm is not None


# -- instruction data -------------------------------------------------------------------------------------------
def _tok(tiny_llama):
    return tiny_llama[1]


def test_text_format_full_sequence_loss_eos_masked(tiny_llama):
    from repro.data.instruct import STANDIN, InstructDataConfig, load_instruction_data
    tok = _tok(tiny_llama)
    cfg = InstructDataConfig(path=str(STANDIN), max_length=64)
    train, val = load_instruction_data(cfg, tok, rows="10:20")
    assert val is None and len(train) == 10
    row = train[0]
    assert len(row["input_ids"]) == 64 and row["input_ids"][-1] == tok.eos_token_id
    assert row["labels"][:-1] == row["input_ids"][:-1] and row["labels"][-1] == -100


def test_alpaca_format_completion_only_and_7_3_split(tiny_llama):
    from repro.data.instruct import STANDIN, InstructDataConfig, load_instruction_data, load_rows, tokenize_example
    tok = _tok(tiny_llama)
    cfg = InstructDataConfig(path=str(STANDIN), format="alpaca", subset=100, val_fraction=0.3, max_length=4096,
                             append_eos=False)
    train, val = load_instruction_data(cfg, tok)
    assert (len(train), len(val)) == (70, 30)
    raw = load_rows(cfg)[0]
    ex = tokenize_example(raw, cfg, tok)
    n_prompt = sum(1 for x in ex["labels"] if x == -100)
    prompt = tok.decode(ex["input_ids"][:n_prompt], skip_special_tokens=True)
    assert prompt.rstrip().endswith("### Response:") and "Below is an instruction" not in prompt
    assert tok.decode(ex["labels"][n_prompt:]).strip() == raw["output"].strip()


def test_bad_data_inputs_are_named(tmp_path):
    from repro.data.instruct import InstructDataConfig, check_instruction_data
    with pytest.raises(ConfigError, match="recovery.data.path"):
        check_instruction_data(InstructDataConfig(path=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "rows.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"missing \['text'\]"):
        check_instruction_data(InstructDataConfig(path=str(bad)))
    with pytest.raises(ConfigError, match="recovery.data.prompt_template"):
        InstructDataConfig(format="alpaca", prompt_template="{instruction}\nAnswer:")
    with pytest.raises(ConfigError, match="recovery.data.rows"):
        InstructDataConfig(rows="20:10")


# -- configs, preflight -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, field", [
    ("recovery.r=0", "recovery.r"),
    ("recovery.target_modules=[q_proj,qq_proj]", "recovery.target_modules[1]"),
    ("recovery.training.warmup_ratio=1.0", "recovery.training.warmup_ratio"),
])
def test_bad_recovery_config_is_refused_before_loading(override, field):
    with pytest.raises(ConfigError) as e:
        compose_run("model=tiny-llama", "score=wanda", "recovery=lora", override)
    assert e.value.field_name == field


def test_recovery_of_a_dense_model_and_missing_data_fail_preflight(tmp_path):
    from repro.run import preflight
    with pytest.raises(ConfigError, match="recovery.name"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=dense", "recovery=dora"))
    with pytest.raises(ConfigError, match="recovery.data.path"):
        preflight(compose_run("model=tiny-llama", "score=wanda", "calib=local_text", "recovery=lora",
                              f"recovery.data.path={tmp_path}/nope.json"))


def test_offline_budget_sizes_every_recovery_and_leaves_none_alone():
    run = compose_run("model=tiny-llama", "env=offline", "score=wanda", "recovery=masked_lora")
    assert run.recovery.data.path.endswith("instruct-standin.jsonl") and run.recovery.data.max_length == 96
    assert run.recovery.merge is True and run.recovery.training.per_device_batch == 2
    assert compose_run("model=tiny-llama", "env=offline").recovery.name == "none"
    full = compose_run("model=tiny-llama", "score=wanda", "recovery=lora")
    assert full.recovery.data.path == "vicgalle/alpaca-gpt4" and full.recovery.training.warmup_ratio == 0.3


@pytest.mark.parametrize("method, merged, sparse", [("lora", False, False), ("masked_lora", True, True)])
def test_recovery_run_records_zeros_and_reuses_its_adapter(method, merged, sparse, results_dir):
    from repro.run import execute
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", f"recovery={method}",
            "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=3", f"paths.results={results_dir}")
    rec = execute(compose_run(*args))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["merged"] is merged and r["training"]["steps"] == 3
    assert r["training"]["optimizer"] == "adamw_torch"
    assert abs(rec["sparsity_after_recovery"]["overall"] - rec["sparsity"]["overall"]) < 1e-6
    assert (r["zeros_unmerged"]["effective_zero_fraction"] > 0.4) is sparse
    workdir = Path(results_dir) / "recovered" / rec["recover_id"]    # the recover stage's folder (repro/stages.py)
    assert (workdir / "loss_curve.png").is_file() and json.loads((workdir / "loss_curve.json").read_text())["train"]
    again = execute(compose_run(*args, "force=true"))
    assert again["recovery"]["reused_adapter"] is True
    assert again["metrics"]["ppl"] == rec["metrics"]["ppl"]


def test_failed_fine_tuning_is_recorded_and_keeps_the_pruned_model(results_dir, monkeypatch):
    from repro import record as rec_mod
    from repro.recovery import lora
    from repro.run import execute

    def killed(*a, **k):
        raise RuntimeError("fine-tuning died")

    monkeypatch.setattr(lora, "fine_tune", killed)
    args = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=masked_lora",
            "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=1", f"paths.results={results_dir}")
    with pytest.raises(RuntimeError, match="fine-tuning died"):
        execute(compose_run(*args))
    (failed,) = [json.loads(p.read_text()) for p in (Path(results_dir) / "runs").glob(f"*/{rec_mod.RECORD_FILE}")]
    assert failed["status"] == "failed" and failed["error"]["type"] == "RuntimeError"
    pruned = Path(failed["pruned_model"]["path"])
    assert pruned.is_dir() and not failed["pruned_model"]["reused"]
    monkeypatch.undo()
    ok = execute(compose_run(*args))                     # the pruned model stored before the failure is reused
    assert ok["status"] == "ok" and ok["pruned_model"]["reused"] is True and Path(ok["pruned_model"]["path"]) == pruned
