import torch

from repro.recovery.lcc_math import fold_bias, lost_basis, pair_split


def test_lost_basis_matches_closed_form_rank1():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(8, generator=g, dtype=torch.float64)
    v = v / v.norm()
    a = torch.randn(50, generator=g, dtype=torch.float64) + 3.0
    dz = a[:, None] * v[None, :] + 1e-3 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    basis, lost = lost_basis(dz, 1)
    assert basis.shape == (8, 8)
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
    tr, va = pair_split(10, 0.3, 42)
    assert len(tr) == 7 and len(va) == 3
    assert set(tr.tolist()).isdisjoint(va.tolist()) and set(tr.tolist()) | set(va.tolist()) == set(range(10))
    # rows 2i (positive) and 2i+1 (negative) of pair i land on the same side
    rows_tr = {r for i in tr.tolist() for r in (2 * i, 2 * i + 1)}
    rows_va = {r for i in va.tolist() for r in (2 * i, 2 * i + 1)}
    assert rows_tr.isdisjoint(rows_va)
    assert (pair_split(10, 0.3, 42)[0] == tr).all()


def test_pair_split_is_the_references_sklearn_split():
    import pytest
    sk = pytest.importorskip("sklearn.model_selection")
    for n in (10, 33, 1000):          # reference: train_test_split(range(n), test_size=0.3, random_state=42)
        tr_ref, va_ref = sk.train_test_split(list(range(n)), test_size=0.3, random_state=42)
        tr, va = pair_split(n, 0.3, 42)
        assert tr.tolist() == tr_ref and va.tolist() == va_ref


def test_lost_basis_is_the_references_sum_and_pads_directions():
    g = torch.Generator().manual_seed(1)
    dz = torch.randn(5, 8, generator=g, dtype=torch.float64)        # n < d_h: 5 directions, 3 zero rows
    v, lost = lost_basis(dz, 3)
    u, s, vh = torch.linalg.svd(dz, full_matrices=False)
    expect = sum(u[:, i].mean() * s[i] * vh[i] for i in range(3))   # components.py: mean(U[:,i]) S_i Vt_i
    assert torch.allclose(lost, expect, atol=1e-12)
    assert v.shape == (8, 8) and torch.allclose(v[:5].norm(dim=1), torch.ones(5, dtype=v.dtype))
    assert (v[5:] == 0).all()
    assert torch.allclose(lost_basis(dz, 8)[1], dz.mean(0), atol=1e-12)     # k > rank: every component


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


def test_hard_negatives_and_word_counts():
    from repro.recovery.lcc_math import hard_negatives, word_counts
    texts = ["the cat sat", "a cat sat down", "stock prices fell", "prices fell sharply today"]
    assert hard_negatives(word_counts(texts)).tolist() == [1, 0, 3, 2]
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert hard_negatives(emb).tolist() == [1, 0, 0]          # never itself; first maximum on ties


def test_probes_batched_equal_separate_and_separate_the_separable():
    from repro.recovery.lcc_math import pair_split, train_probes
    g = torch.Generator().manual_seed(0)
    n, d = 40, 6
    pos = torch.randn(3, n, d, generator=g)
    neg = torch.randn(3, n, d, generator=g)
    pos[0, :, 0] += 10.0                                         # head 0: separable on feature 0
    tr, va = pair_split(n)
    together = train_probes(pos, neg, tr, va, epochs=200, seed=3)
    assert together[0] >= 0.95 and together[1] < 0.8
    # head 0 alone (same seed: same init row) gets the same accuracy: probes do not interact
    alone = train_probes(pos[:1], neg[:1], tr, va, epochs=200, seed=3)
    assert alone[0] == together[0]


def test_lost_basis_matches_the_reference_fixture():
    """tests/golden/restorelcc_components.pt: the reference's obtain_main_components run unmodified
    (tools/golden/restorelcc_fixture.py); its outputs are fp16."""
    from pathlib import Path
    fx = torch.load(Path(__file__).parent / "golden" / "restorelcc_components.pt", weights_only=True)
    for name, case in fx["cases"].items():
        n, d = case["dz"].shape
        rank = min(n, d)
        for k in (1, 10):
            v, lost = lost_basis(case["dz"], k)
            ref_lost, ref_v = case[f"lost_k{k}"].float(), case[f"vt_k{k}"].float()
            assert torch.allclose(lost, ref_lost, rtol=2e-3, atol=2e-3 * ref_lost.abs().max()), (name, k)
            # directions: equal up to each row's sign (SVD sign freedom); zero rows beyond the rank
            cos = (v[:rank] * ref_v[:rank]).sum(-1).abs()
            assert torch.allclose(cos, torch.ones(rank), atol=5e-3), (name, k)
            assert (v[rank:] == 0).all() and (ref_v[rank:] == 0).all()


def test_select_heads_never_picks_a_removed_head():
    """Structured bases (SlimGPT): heads whose o_proj columns are all zero are skipped, a fraction counts live heads,
    and live_heads reads them from the model's o_proj weights."""
    from types import SimpleNamespace

    from repro.recovery.lcc_math import select_heads
    from repro.recovery.restorelcc import live_heads

    acc = torch.tensor([[0.9, 0.8], [0.7, 0.6]])
    live = torch.tensor([[False, True], [True, True]])
    assert select_heads(acc, 2, live) == [1, 2]
    assert select_heads(acc, 1.0, live) == [1, 2, 3]
    o = torch.nn.Linear(4, 3, bias=False)                  # 2 heads of dim 2
    with torch.no_grad():
        o.weight[:, 2:] = 0
    block, model = torch.nn.Module(), torch.nn.Module()     # the adapter's llama layout: model.layers.0.self_attn.o_proj
    block.self_attn = torch.nn.Module()
    block.self_attn.o_proj = o
    model.model, model.config = torch.nn.Module(), SimpleNamespace(model_type="llama")
    model.model.layers = torch.nn.ModuleList([block])
    assert live_heads(model, 2).tolist() == [[True, False]]
