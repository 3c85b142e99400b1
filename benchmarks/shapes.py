"""Model shapes the benchmarks stand in for, with random weights (speed and memory depend on the shape, not on the
values): one place for the LLaMA-2 configurations every GPU benchmark names.

    from shapes import SHAPES, build_model
    model = build_model("7b", torch.float16, "cuda", seed=0, layers=8)   # the first 8 blocks of the 7B shape

`small` is a reduced LLaMA for CPU smoke runs of the same scripts. `70b` is LLaMA-2-70B's block (GQA, 8 KV heads):
it does not fit the device's 128 GiB of host memory whole in fp16 (≈ 138 GB), so benchmarks run a few of its 80
blocks (`layers=`) and scale per block.
"""
from __future__ import annotations

import torch

SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
    "small": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048),
}


def build_model(shape: str, dtype: torch.dtype, device: str, seed: int = 0, layers: int | None = None):
    """A random-weight LlamaForCausalLM of `shape` (optionally its first `layers` blocks), built in place on
    `device` in `dtype` (no fp32 copy on the way), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = dict(SHAPES[shape], **({"num_hidden_layers": layers} if layers else {}))
    config = LlamaConfig(**sizes, tie_word_embeddings=False)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()
