import torch

from repro.recovery._heads import o_proj_pre_hooks
from repro.recovery.lcc_probe import capture_head_inputs


def test_capture_last_token_per_head_and_hooks_removed(tiny_llama):
    model = tiny_llama[0]
    cfg = model.config
    n_heads, hd = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    ids = torch.randint(0, cfg.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0                                   # second prompt has 4 real tokens
    acts = capture_head_inputs(model, ids, mask)
    assert set(acts) == set(range(cfg.num_hidden_layers))
    assert acts[0].shape == (2, n_heads, hd)
    # the same prompt alone (no padding) gives the same last-token activations
    solo = capture_head_inputs(model, ids[1:, :4])
    assert torch.allclose(acts[0][1], solo[0][0], atol=1e-5)
    assert all(len(l.self_attn.o_proj._forward_pre_hooks) == 0 for l in model.model.layers)


def test_hooks_removed_on_error(tiny_llama):
    model = tiny_llama[0]
    try:
        with o_proj_pre_hooks(model, lambda i, a: None):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all(len(l.self_attn.o_proj._forward_pre_hooks) == 0 for l in model.model.layers)
