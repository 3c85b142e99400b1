import torch

from repro.recovery.lcc_math import fold_bias, lost_basis, pair_split


def test_lost_basis_matches_closed_form_rank1():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    v = v / v.norm()
    a = torch.randn(50, generator=g, dtype=torch.float64) + 3.0
    dz = a[:, None] * v[None, :] + 1e-3 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    basis, lost = lost_basis(dz, 1)
    # closed form: top eigenvector of dZ^T dZ, mean projection = (mean(dZ) . v) v
    _, evecs = torch.linalg.eigh(dz.T @ dz)
    top = evecs[:, -1]
    assert torch.allclose(basis[0].abs(), top.abs(), atol=1e-8)
    expect = (dz.mean(0) @ top) * top
    assert torch.allclose(lost, expect, atol=1e-10)
    assert torch.allclose(lost, a.mean() * v, atol=1e-2)


def test_lost_basis_full_rank_is_mean():
    dz = torch.randn(20, 4, dtype=torch.float64)
    _, lost = lost_basis(dz, 4)
    assert torch.allclose(lost, dz.mean(0), atol=1e-10)


def test_pair_split_keeps_pairs_together():
    tr, va = pair_split(10, 0.7, 42)
    assert len(tr) == 7 and len(va) == 3
    assert set(tr.tolist()).isdisjoint(va.tolist()) and set(tr.tolist()) | set(va.tolist()) == set(range(10))
    # rows 2i (positive) and 2i+1 (negative) of pair i land on the same side
    rows_tr = {r for i in tr.tolist() for r in (2 * i, 2 * i + 1)}
    rows_va = {r for i in va.tolist() for r in (2 * i, 2 * i + 1)}
    assert rows_tr.isdisjoint(rows_va)
    assert torch.equal(pair_split(10, 0.7, 42)[0], tr)


def test_fold_bias_equals_runtime_add():
    w = torch.randn(6, 6, dtype=torch.float64)
    w[w.abs() < 0.5] = 0
    x = torch.randn(3, 6, dtype=torch.float64)
    comps = {1: torch.randn(2, dtype=torch.float64)}
    xa = x.clone()
    xa[:, 2:4] += comps[1]
    b = fold_bias(w, comps, head_dim=2)
    assert torch.allclose(x @ w.T + b, xa @ w.T, rtol=1e-10)


def test_select_heads_count_fraction_and_bad_input():
    import pytest
    from repro.config import ConfigError
    from repro.recovery.lcc_math import select_heads
    acc = torch.tensor([[0.5, 0.9], [0.7, 0.6]])
    assert select_heads(acc, 2) == [1, 2]
    assert select_heads(acc, 0.5) == [1, 2]
    with pytest.raises(ConfigError, match="top_heads"):
        select_heads(acc, 5)
    with pytest.raises(ConfigError):
        select_heads(acc, 1.5)
