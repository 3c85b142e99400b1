"""Multiflow scores: |W| times the outer product of output/input importances of |W|·a; row-wise masks."""
import torch

from repro.methods.multiflow import multiflow_score
from repro.prune.stats import LayerStats
from repro.registry import build, validate_method_node


def test_score_matches_the_elementwise_definition():
    torch.manual_seed(0)
    w, sq = torch.randn(5, 7), torch.rand(7) + 0.1
    a = sq.sqrt()
    flow = [[abs(w[i, j].item()) * a[j].item() for j in range(7)] for i in range(5)]
    i_out = [sum(r) / 7 for r in flow]
    i_in = [sum(flow[i][j] for i in range(5)) / 5 for j in range(7)]
    expected = torch.tensor([[abs(w[i, j].item()) * i_out[i] * i_in[j] for j in range(7)] for i in range(5)])
    assert torch.allclose(multiflow_score(w, sq), expected, rtol=1e-5)


def test_prunes_int_cols_times_s_per_row_and_differs_from_wanda():
    torch.manual_seed(1)
    lin = torch.nn.Linear(40, 12, bias=False)
    stats = LayerStats(["sq_norm"])
    stats.add(torch.randn(64, 40) * torch.linspace(0.1, 3, 40), nseq=2)
    masks = {}
    for name in ("multiflow", "wanda"):
        layer = torch.nn.Linear(40, 12, bias=False)
        layer.weight.data = lin.weight.data.clone()
        build("score", validate_method_node("score", {"name": name})).prune_layer("l", layer, stats, 0.7, None)
        masks[name] = layer.weight == 0
        assert torch.equal(masks[name].sum(dim=1), torch.full((12,), int(40 * 0.7)))
    assert not torch.equal(masks["multiflow"], masks["wanda"])
