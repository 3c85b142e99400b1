"""RestoreLCC and LoFiT on LLaMA, Mistral and OPT through the architecture adapter (repro/recovery/_heads.py):
the o_proj (OPT out_proj) fold equals the runtime add, per-head captures, LoFiT's edits on OPT, what a saved model
can hold per architecture (checked against the installed transformers), preflight, and the statistics cache key."""
import copy
import dataclasses

import pytest
import torch

from conftest import compose_run
from repro.config import ConfigError
from repro.models.adapter import adapter_for
from repro.recovery._heads import attention_outputs, head_shape
from repro.recovery._heads import save_folded
from repro.recovery.lcc_probe import capture_head_inputs
from repro.recovery.restorelcc import HeadCompensation, compensate, fold_into_o_proj
from test_restorelcc import TINY, _pruned, _zeros

TYPES = ["llama", "mistral", "opt", "opt_nobias"]


@pytest.fixture(scope="module")
def tiny_opt_nobias():
    from repro.models.loading import load_model

    return load_model(compose_run("model=tiny-opt", "+model.random_init.enable_bias=false").model)


@pytest.fixture(params=TYPES)
def arch(request):
    return request.param, request.getfixturevalue(f"tiny_{request.param}")


def _no_hooks(model):
    return all(len(o._forward_pre_hooks) == 0 and len(o._forward_hooks) == 0 for o in attention_outputs(model))


def test_fold_equals_runtime_add_and_saves_where_the_architecture_can(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    name, (model, tok) = arch
    model, tok = _pruned((model, tok))
    n_heads, d = head_shape(model.config)
    o_projs = attention_outputs(model)
    names = {id(m): n for n, m in model.named_modules()}
    where = ("model.decoder.layers.{}.self_attn.out_proj" if name.startswith("opt")
             else "model.layers.{}.self_attn.o_proj")
    assert [names[id(o)] for o in o_projs] == [where.format(i) for i in range(model.config.num_hidden_layers)]
    assert all(o.in_features == n_heads * d for o in o_projs)
    before = [None if o.bias is None else o.bias.detach().clone() for o in o_projs]
    g = torch.Generator().manual_seed(1)
    v = torch.linalg.qr(torch.randn(2, d, d, dtype=torch.float64))[0].transpose(1, 2).float()
    comps = {0: HeadCompensation([1, 3], v, n_heads, 0.5, g), 1: HeadCompensation([0], v[:1], n_heads, 0.5, g)}
    ids = torch.randint(0, model.config.vocab_size - 3, (2, 12), generator=g)
    zeros = _zeros(model)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with compensate(model, comps):
            runtime = model(input_ids=ids).logits
    assert _no_hooks(model) and not any(hasattr(o, "restorelcc") for o in o_projs)
    assert (runtime - plain).abs().max() > 1e-3
    per_head = {i: dict(zip(m.heads.tolist(), m.comps().detach())) for i, m in comps.items()}
    added = fold_into_o_proj(model, per_head)
    with torch.no_grad():
        folded = model(input_ids=ids).logits
    assert ((folded - runtime).norm() / runtime.norm()) < 1e-4
    assert _zeros(model) == zeros                                  # linear weights keep exactly their zeros
    if name == "opt":                                              # out_proj has a bias: the fold adds to it
        assert added == 0
        c = torch.zeros(n_heads * d)
        c[1 * d:2 * d], c[3 * d:4 * d] = per_head[0][1], per_head[0][3]
        assert torch.allclose(o_projs[0].bias, before[0] + o_projs[0].weight @ c, atol=1e-6)
    else:
        assert added == 2 * model.config.hidden_size
    if name == "mistral":                                          # no o_proj bias in a Mistral checkpoint
        with pytest.raises(ConfigError) as e:
            save_folded(model, tok, tmp_path / "m")
        assert e.value.field_name == "recovery.save_model" and "mistral" in str(e.value)
        return
    save_folded(model, tok, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        reloaded = again(input_ids=ids).logits
    assert torch.allclose(reloaded, folded, atol=1e-5, rtol=1e-5) and _zeros(again) == zeros


def test_capture_gives_one_slice_per_head_of_the_head_width(arch):
    name, (model, _) = arch
    n_heads, d = head_shape(model.config)
    ids = torch.randint(0, model.config.vocab_size - 3, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    outs = {}
    hooks = [o.register_forward_hook(lambda m, a, y, i=i: outs.__setitem__(i, y.detach()))
             for i, o in enumerate(attention_outputs(model))]
    try:
        acts = capture_head_inputs(model, ids, mask)
    finally:
        for h in hooks:
            h.remove()
    assert _no_hooks(model) and sorted(acts) == list(range(model.config.num_hidden_layers))
    last = torch.tensor([6, 4])
    for i, o in enumerate(attention_outputs(model)):
        assert acts[i].shape == (2, n_heads, d)
        # the slices are the projection's input, head-major: W_O . concat_h(z_h) (+ b) is its output
        recomposed = torch.nn.functional.linear(acts[i].reshape(2, n_heads * d), o.weight, o.bias)
        assert torch.allclose(recomposed, outs[i][torch.arange(2), last], atol=1e-5)
    # slice h is head h: zero the values of key/value head 0, and exactly its query heads' slices vanish
    model = copy.deepcopy(model)
    group = n_heads // (getattr(model.config, "num_key_value_heads", None) or n_heads)
    with torch.no_grad():
        for block in adapter_for(model).blocks(model):
            v = block.self_attn.v_proj
            v.weight[:d] = 0
            if v.bias is not None:
                v.bias[:d] = 0
    acts = capture_head_inputs(model, ids, mask)
    for i in acts:
        assert acts[i][:, :group].abs().max() == 0 and (acts[i][:, group:].abs().amax(dim=-1) > 0).all()


@torch.no_grad()
def test_lofit_scaling_and_bias_edits_on_opt(tiny_opt):
    from repro.recovery.lofit import HeadEdit, edits_on, fold_biases

    model = copy.deepcopy(tiny_opt[0])
    n_heads, d = head_shape(model.config)
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(2))
    scale = HeadEdit(n_heads, d)
    scale.scale.zero_()
    scale.scale[2] = -1.0                                          # (1 + A) z = 0: head 2 of layer 1 switched off
    with edits_on(model, {1: scale}):
        edited = model(ids).logits
    layers = model.model.decoder.layers
    assert _no_hooks(model) and "lofit_edit" not in layers[1].self_attn.out_proj._modules
    out_proj = layers[1].self_attn.out_proj
    saved = out_proj.weight.clone()
    out_proj.weight[:, 2 * d:3 * d] = 0                            # the same head removed from W_O
    assert torch.allclose(model(ids).logits, edited, atol=1e-5)
    out_proj.weight.copy_(saved)
    plain = model(ids).logits
    bias = HeadEdit(n_heads, d, [0, 3], std=0.5, generator=torch.Generator().manual_seed(3))
    with edits_on(model, {0: bias}):
        runtime = model(ids).logits
    before = layers[0].self_attn.out_proj.bias.clone()
    fold_biases(model, {0: (bias.heads.tolist(), bias.bias)})
    after = layers[0].self_attn.out_proj
    assert (runtime - plain).abs().max() > 1e-3 and torch.allclose(model(ids).logits, runtime, atol=1e-5, rtol=1e-4)
    assert torch.allclose(after.bias, before + after.weight @ bias.offset(), atol=1e-6)


@pytest.mark.parametrize("model_type", ["llama", "mistral", "opt"])
def test_bias_flags_match_the_installed_transformers(model_type):
    """The adapter's out_bias_flag is what transformers' modelling code does: every linear it names gets a bias
    with the flag on; a type without a flag (Mistral) has no o_proj bias even when one is asked for."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from repro.models.adapter import adapter_for_model_type

    base = "tiny-opt" if model_type == "opt" else "tiny-llama"
    spec = {k: v for k, v in compose_run(f"model={base}").model.random_init.items() if k != "model_type"}
    adapter = adapter_for_model_type(model_type)
    flag = adapter.out_bias_flag(model_type)
    key = flag[0] if flag else "attention_bias"
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **spec, **{key: True}))
    with_bias = {n for n, m in adapter.linears(adapter.blocks(model)[0]).items() if m.bias is not None}
    assert with_bias == (set(flag[1]) if flag else set())
    assert (attention_outputs(model)[0].bias is not None) == (flag is not None)


MISTRAL = ("model=tiny-llama", "model.random_init.model_type=mistral")
LOFIT = ("recovery=lofit", "recovery.heads=0.25")


@pytest.mark.parametrize("model, method, field", [
    (MISTRAL, ("recovery.save_model=true",), "recovery.save_model"),    # the fold cannot be saved for Mistral
    (MISTRAL, (), None),                                                 # ... but runs and evaluates in-process
    (("model=tiny-opt",), ("recovery.save_model=true",), None),
    (("model=tiny-llama", "model.random_init.model_type=phi"), (), "recovery.name"),
    (MISTRAL, LOFIT, None),
    (("model=tiny-opt",), LOFIT, None),
    (("model=tiny-llama", "model.random_init.model_type=phi"), LOFIT, "recovery.name"),
])
def test_preflight_per_architecture(model, method, field):
    from repro.run import preflight

    args = (*model, *TINY[1:6], *method) if method != LOFIT else (*model, *TINY[1:4], *method)
    if field is None:
        preflight(compose_run(*args))
        return
    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*args))
    assert e.value.field_name == field
    if field == "recovery.save_model":
        assert "True" in str(e.value) and "'mistral'" in str(e.value) and "bias" in str(e.value)
    else:
        assert "llama, mistral, opt" in str(e.value) and "'phi'" in str(e.value)


def test_stats_key_ignores_probe_only_settings_not_the_pruned_model():
    from repro.recovery.lcc_probe import probe_key, stats_key
    from repro.stages import resolve

    wanda, mag = (resolve(compose_run(*TINY, f"score={s}")) for s in ("wanda", "magnitude"))
    cfg, pid = wanda.cfg.recovery, wanda.prune_id
    for change in ({"probe_epochs": 7}, {"probe_lr": 0.5}, {"probe_val_fraction": 0.5}, {"probe_seed": 1},
                   {"k": 1}, {"negatives": "sbert"}, {"top_heads": 2}):
        other = dataclasses.replace(cfg, **change)
        assert stats_key(pid, other) == stats_key(pid, cfg), change
    assert probe_key(pid, dataclasses.replace(cfg, probe_epochs=7)) != probe_key(pid, cfg)   # the probe key is kept
    assert stats_key(mag.prune_id, mag.cfg.recovery) != stats_key(pid, cfg)                  # another pruned model
    for change in ({"probe_samples": 8}, {"probe_max_length": 64}, {"task": "boolq"},
                   {"data": dataclasses.replace(cfg.data, seed=1)}):
        assert stats_key(pid, dataclasses.replace(cfg, **change)) != stats_key(pid, cfg), change


@pytest.mark.parametrize("model_args", [("model=tiny-opt", "recovery.save_model=true"), MISTRAL])
def test_tiny_restorelcc_run_on_opt_and_mistral(model_args, results_dir):
    from repro.run import execute

    rec = execute(compose_run(*model_args, *TINY[1:], f"paths.results={results_dir}"))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["heads_selected"] == 4 and r["heads_total"] == 8
    assert r["fold_rel_diff"] < 1e-4 and 1 < rec["metrics"]["ppl"]["wikitext2"] < float("inf")
    assert rec["sparsity_after_recovery"]["overall"] == rec["sparsity"]["overall"]
    assert ("saved_model" in r) == ("recovery.save_model=true" in model_args)
