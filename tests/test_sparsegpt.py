"""SparseGPT against a literal column-by-column OBS loop (written here from the paper's Algorithm 1 / the
reference's published loop), plus the Hessian, grouping, N:M axis and preflight checks."""
import pytest
import torch

from repro.config import ConfigError
from repro.methods.sparsegpt import SparseGPT, SparseGPTConfig, inverse_hessian_factor, sparsegpt_prune
from repro.prune.stats import LayerStats
from repro.run import preflight
from tests.conftest import compose_run


def literal_obs(W, H, sparsity, n=0, m=0, blocksize=128, percdamp=0.01):
    """One column at a time, exactly as described: dead columns, damping, upper factor of H⁻¹, per-block mask."""
    W, H = W.clone().double(), H.clone().double()
    cols = W.shape[1]
    for j in range(cols):
        if H[j, j] == 0:
            H[j, j] = 1.0
            W[:, j] = 0.0
    H = H + percdamp * H.diagonal().mean() * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    for b0 in range(0, cols, blocksize):
        b1 = min(b0 + blocksize, cols)
        mask = torch.zeros(W.shape[0], b1 - b0, dtype=torch.bool)
        if not n:
            score = (W[:, b0:b1] / U.diagonal()[b0:b1]) ** 2
            k = int(score.numel() * sparsity)
            mask = score <= score.flatten().sort().values[k]
        for j in range(b0, b1):
            if n and (j - b0) % m == 0:
                score = (W[:, j:j + m] / U.diagonal()[j:j + m]) ** 2
                for r in range(W.shape[0]):
                    mask[r, j - b0 + score[r].argsort()[:n]] = True
            err = torch.where(mask[:, j - b0], W[:, j], torch.zeros_like(W[:, j])) / U[j, j]
            W[:, j:] -= err[:, None] * U[j, j:][None, :]     # pruned column becomes exactly 0
            W[mask[:, j - b0], j] = 0.0
    return W.float()


def _problem(rows=8, cols=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(200, cols, generator=g) * (torch.rand(cols, generator=g) * 3 + 0.1)
    X[:, 3] = 0                                                # a dead input column
    return torch.randn(rows, cols, generator=g), 2 / 8 * X.t() @ X


@pytest.mark.parametrize("n,m,blocksize", [(0, 0, 8), (0, 0, 128), (2, 4, 8), (4, 8, 16), (2, 4, 128)])
def test_masks_and_weights_equal_the_literal_obs_loop(n, m, blocksize):
    W, H = _problem()
    hinv, dead = inverse_hessian_factor(H, 0.01)
    ours = sparsegpt_prune(W, hinv, dead, [slice(0, 8)], [0.5], n, m, blocksize)
    ref = literal_obs(W, H, 0.5, n, m, blocksize)
    assert torch.equal(ours == 0, ref == 0)
    torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    assert (ours[:, 3] == 0).all()                             # dead column zeroed


def test_damping_is_applied():
    W, H = _problem(seed=1)
    hinv, dead = inverse_hessian_factor(H, 0.01)
    ours = sparsegpt_prune(W, hinv, dead, [slice(0, 8)], [0.5], blocksize=8)
    undamped = literal_obs(W, H, 0.5, blocksize=8, percdamp=0.0)
    assert (ours - undamped).abs().max() > 1e-3                # the literal loop without damping differs ...
    torch.testing.assert_close(ours, literal_obs(W, H, 0.5, blocksize=8), atol=2e-5, rtol=1e-4)  # ... with it, not


def test_unstructured_mask_is_chosen_per_block_over_all_rows():
    W, H = _problem(rows=8, cols=16, seed=2)
    hinv, dead = inverse_hessian_factor(H, 0.01)
    out = sparsegpt_prune(W, hinv, dead, [slice(0, 8)], [0.5], blocksize=8)
    per_block = [(out[:, b:b + 8] == 0).sum().item() for b in (0, 8)]
    assert per_block == [33, 33]          # int(64 · 0.5) + 1: `score <= sort(score)[k]` also prunes the k-th
    assert len({(out[r] == 0).sum().item() for r in range(8)}) > 1   # rows differ: the group is the block


def test_nm_groups_run_along_input_columns():
    W, H = _problem(rows=8, cols=16, seed=3)
    hinv, dead = inverse_hessian_factor(H, 0.01)
    out = sparsegpt_prune(W, hinv, dead, [slice(0, 8)], [0.5], 2, 4, 16)
    assert ((out == 0).view(8, 4, 4).sum(-1) == 2).all()


def test_hessian_and_inverse_are_shared_by_linears_with_one_input():
    W1, H = _problem(rows=8, cols=16, seed=4)
    W2 = torch.randn(6, 16)
    stats = LayerStats({"hessian"})
    stats.add(torch.randn(64, 16), nseq=4)
    lin1, lin2 = torch.nn.Linear(16, 8, bias=False), torch.nn.Linear(16, 6, bias=False)
    lin1.weight.data, lin2.weight.data = W1.clone(), W2.clone()
    scorer = SparseGPT(SparseGPTConfig(blocksize=8))
    scorer.prune_group([("a", lin1, stats, 0.5), ("b", lin2, stats, 0.7)], None)
    assert len(stats.cache) == 1                               # one damped inverse for both
    hinv, dead = inverse_hessian_factor(stats["hessian"], 0.01)
    torch.testing.assert_close(lin1.weight.data, sparsegpt_prune(W1, hinv, dead, [slice(0, 8)], [0.5], blocksize=8))
    torch.testing.assert_close(lin2.weight.data, sparsegpt_prune(W2, hinv, dead, [slice(0, 6)], [0.7], blocksize=8))


def test_per_row_targets_give_each_row_its_sparsity():
    W, H = _problem(rows=4, cols=16, seed=5)
    hinv, dead = inverse_hessian_factor(H, 0.01)
    target = torch.tensor([0.25, 0.5, 0.75, 0.5])
    out = sparsegpt_prune(W, hinv, dead, [slice(0, 4)], [target], blocksize=8)
    assert (out == 0).sum(1).tolist() == [4, 8, 12, 8]


def test_fp16_weights_are_updated_in_fp32_and_cast_back():
    W, H = _problem(seed=6)
    lin = torch.nn.Linear(16, 8, bias=False).half()
    lin.weight.data = W.half()
    stats = LayerStats({"hessian"})
    stats.add(torch.randn(64, 16), nseq=4)
    SparseGPT(SparseGPTConfig(blocksize=8)).prune_layer("x", lin, stats, 0.5, None)
    hinv, dead = inverse_hessian_factor(stats["hessian"], 0.01)
    expected = sparsegpt_prune(W.half().float(), hinv, dead, [slice(0, 8)], [0.5], blocksize=8).half()
    assert lin.weight.dtype == torch.float16 and torch.equal(lin.weight.data, expected)


def test_config_checks_before_loading():
    with pytest.raises(ConfigError, match="score.percdamp"):
        compose_run("score=sparsegpt", "score.percdamp=-1")
    run = compose_run("env=offline", "model=tiny-llama", "score=sparsegpt", "pattern=nm_4_8", "score.blocksize=12")
    with pytest.raises(ConfigError, match="score.blocksize"):
        preflight(run)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_group_sets_pick_what_topk_picks_also_on_ties(n, m):
    from repro.methods.sparsegpt import _nm_patterns, nm_group_sets
    g = torch.Generator().manual_seed(n * m)
    masks, lut = _nm_patterns(n, m)
    bits = 2 ** torch.arange(m)
    for score in (torch.rand(64, m, generator=g),                                # distinct: the rank path
                  torch.randint(0, 3, (64, m), generator=g).float()):           # ties: topk decides
        idx = torch.topk(score, n, dim=1, largest=False)[1]
        expected = torch.zeros_like(score, dtype=torch.bool).scatter_(1, idx, True)
        assert torch.equal(masks[nm_group_sets(score, n, bits, lut)], expected)
