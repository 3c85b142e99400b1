"""Perplexity with the papers' loop, batched.

Non-overlapping windows `[k·L, (k+1)·L)` of the test stream, the tail dropped, no attention mask, no BOS
re-inserted per window. Per window the mean cross-entropy over its L−1 shifted positions; PPL = exp(mean over
windows). This equals the references' `exp(Σ loss_k·L / (n·L))` (the factor L cancels).

Deviations (float noise only): windows go through the model `batch_size` at a time; the per-window losses are
computed in fp32 from the logits (the references feed the model-dtype logits to CE) and summed in fp64.
`max_windows` evaluates only the first windows (offline demos): the fingerprint records it.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def window_count(num_tokens: int, seqlen: int, max_windows: Optional[int] = None) -> int:
    n = num_tokens // seqlen
    return min(n, max_windows) if max_windows is not None else n


@torch.no_grad()
def perplexity(model, input_ids: torch.Tensor, seqlen: int, batch_size: int = 1,
               max_windows: Optional[int] = None, desc: str = "ppl") -> tuple[float, int]:
    """Return `(ppl, n_windows)` of `model` on the token stream `input_ids[1, T]`."""
    n = window_count(input_ids.shape[1], seqlen, max_windows)
    if n == 0:
        raise ValueError(f"the evaluation stream has {input_ids.shape[1]} tokens, fewer than one window of {seqlen}")
    windows = input_ids[0, : n * seqlen].view(n, seqlen)
    device = model.get_input_embeddings().weight.device
    total = 0.0
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False):
        batch = windows[start:start + batch_size].to(device)
        logits = model(batch, use_cache=False).logits
        total += window_losses(logits, batch).double().sum().item()
    return math.exp(total / n), n


def window_losses(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each window: `[B, L, V]`, `[B, L]` -> `[B]` (fp32)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = tokens[:, 1:]
    loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                           reduction="none")
    return loss.view(tokens.shape[0], -1).mean(dim=1)
