"""The shared mask builders: counts per row, sort direction, ties, N:M axis, per-layer threshold, per-row targets."""
import pytest
import torch

from repro.config import PatternConfig
from repro.prune.masks import (build_mask, keep_highest_per_row, prune_below_layer_threshold, prune_lowest_per_row,
                               prune_n_of_m)


def test_per_row_prunes_int_cols_times_s_lowest():
    score = torch.tensor([[5., 1., 4., 2., 3., 9., 0., 7., 8., 6.],
                          [0., 1., 2., 3., 4., 5., 6., 7., 8., 9.]])
    mask = prune_lowest_per_row(score, 0.55)                 # int(10 · 0.55) = 5 per row, not 6
    assert mask.sum(1).tolist() == [5, 5]
    assert set(mask[0].nonzero().flatten().tolist()) == {1, 2, 3, 4, 6}
    assert mask[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]     # the lowest, not the highest


def test_per_row_ties_break_by_position_stable_sort():
    score = torch.ones(1, 8)
    assert prune_lowest_per_row(score, 0.5)[0].tolist() == [True] * 4 + [False] * 4


def test_layer_threshold_prunes_ties_at_the_threshold():
    score = torch.tensor([[1., 2., 2., 2.], [3., 4., 5., 6.]])
    mask = prune_below_layer_threshold(score, 0.25)          # k = 2 -> t = sort[2] = 2 -> all three 2s go
    assert mask.sum().item() == 4 and not mask[1].any()


def test_keep_highest_per_row_keeps_floor_of_one_minus_s():
    score = torch.arange(20.).view(2, 10)
    mask = keep_highest_per_row(score, torch.tensor([0.25, 0.5]))
    assert (~mask).sum(1).tolist() == [7, 5]                  # floor(0.75·10) = 7, floor(0.5·10) = 5
    assert not mask[0, 3:].any() and mask[0, :3].all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_n_of_m_groups_are_consecutive_input_columns(n, m):
    torch.manual_seed(0)
    score = torch.rand(6, 4 * m)
    mask = prune_n_of_m(score, n, m)
    assert (mask.view(6, 4, m).sum(-1) == n).all()
    for r in range(6):
        for g in range(4):
            group = score[r, g * m:(g + 1) * m]
            assert set(mask[r, g * m:(g + 1) * m].nonzero().flatten().tolist()) == set(group.argsort()[:n].tolist())


def test_n_of_m_rejects_a_width_not_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of 4"):
        prune_n_of_m(torch.rand(2, 6), 2, 4)


def test_build_mask_dispatch():
    score = torch.rand(4, 8)
    assert torch.equal(build_mask(score, 0.5, PatternConfig("nm", 2, 4)), prune_n_of_m(score, 2, 4))
    assert torch.equal(build_mask(score, 0.5, None, "layer"), prune_below_layer_threshold(score, 0.5))
    with pytest.raises(ValueError, match="granularity"):
        build_mask(score, 0.5, None, "block")


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_n_of_m_breaks_ties_like_the_per_group_topk_loop(n, m):
    torch.manual_seed(0)
    score = torch.randint(0, 3, (32, 64)).float()            # many exact ties (as fp16 / GGUF magnitudes)
    loop = torch.zeros_like(score, dtype=torch.bool)
    for start in range(0, 64, m):                             # one topk per group of M columns, left to right
        loop.scatter_(1, start + torch.topk(score[:, start:start + m], n, dim=1, largest=False)[1], True)
    assert torch.equal(prune_n_of_m(score, n, m), loop)


def test_kth_smallest_is_the_references_sorted_value_also_with_ties():
    from repro.prune.masks import kth_smallest

    flat = torch.tensor([3.0, 1.0, 2.0, 1.0, 5.0, 2.0, 2.0])
    ref = torch.sort(flat).values
    assert [float(kth_smallest(flat, k)) for k in range(flat.numel())] == ref.tolist()
