"""Perplexity: the papers' loop, checked against a hand computation; batching does not change the value."""
import math

import pytest
import torch

from repro.eval.perplexity import perplexity, window_count


def hand_ppl(model, ids, seqlen, n):
    """exp(mean over windows of the mean next-token NLL), computed with log_softmax + gather, one window at a time."""
    losses = []
    with torch.no_grad():
        for k in range(n):
            w = ids[:, k * seqlen:(k + 1) * seqlen]
            logp = torch.log_softmax(model(w).logits[0, :-1].double(), dim=-1)
            nll = -logp.gather(1, w[0, 1:].view(-1, 1)).mean()
            losses.append(nll.item() * seqlen)             # the references' `loss * seqlen` ...
    return math.exp(sum(losses) / (n * seqlen))             # ... divided by n·seqlen


def test_matches_hand_computation_and_drops_the_tail(tiny_llama):
    model, _ = tiny_llama
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 259, (1, 5 * 32 + 17), generator=g)
    value, n = perplexity(model, ids, seqlen=32, batch_size=1)
    assert n == 5                                           # 17 tail tokens dropped
    assert value == pytest.approx(hand_ppl(model, ids, 32, 5), rel=1e-5)


def test_batch_size_does_not_change_the_result(tiny_opt):
    model, _ = tiny_opt
    ids = torch.randint(0, 259, (1, 7 * 16), generator=torch.Generator().manual_seed(1))
    a, _ = perplexity(model, ids, 16, batch_size=1)
    b, _ = perplexity(model, ids, 16, batch_size=3)
    assert a == pytest.approx(b, rel=1e-5)


def test_max_windows_evaluates_the_first_windows_only(tiny_llama):
    model, _ = tiny_llama
    ids = torch.randint(0, 259, (1, 6 * 16), generator=torch.Generator().manual_seed(2))
    value, n = perplexity(model, ids, 16, max_windows=2)
    assert n == 2 and value == pytest.approx(hand_ppl(model, ids, 16, 2), rel=1e-5)
    assert window_count(100, 16) == 6 and window_count(100, 16, 3) == 3


def test_stream_shorter_than_a_window_is_an_error(tiny_llama):
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(tiny_llama[0], torch.zeros(1, 10, dtype=torch.long), 16)
