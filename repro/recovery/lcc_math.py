"""Pure math for RestoreLCC (recovery=restorelcc; reference zijian678/restorelcc@b1a8e09, research note
/work/shared/research/losa_restorelcc.md §2-§3). No model code here.

- `lost_basis(delta_z, k)`: per-head SVD of dZ = Z_dense - Z_pruned (n samples x d_h, the head's slice of the
  o_proj input at the last prompt token). Returns all right singular vectors V (d_h x d_h; rows L2-normalised,
  zero rows when n < d_h, as utils/components.py `obtain_main_components`) and the lost component
  sum_{i<k} mean_n(U[n,i]) S_i V_i = the mean over samples of the projection of dZ onto the top-k directions
  (k: paper K=1, reference code k=10). Float64 SVD (the reference: float32 SVD of fp16 activations, result .half()).
- `pair_split(n_pairs, val_fraction, seed)`: the pair-preserving split of the probes. Same indices as the reference's
  `sklearn.model_selection.train_test_split(range(n), test_size=0.3, random_state=42)` (numpy RandomState
  permutation; the first ceil(0.3 n) are validation), re-expressed so sklearn is not a dependency.
- `hard_negatives(emb)`: for every row, the index of the most cosine-similar OTHER row (the reference's SBERT hard
  negatives: cosine matrix, diagonal -1, first argmax). `word_counts(texts)`: bag-of-words vectors for the offline
  lexical stand-in.
- `train_probes(pos, neg, train_idx, val_idx, ...)`: one Linear(2 d_h -> 1) + sigmoid + BCE probe per head, Adam,
  full batch, all heads at once (each head's loss is summed, so each probe gets exactly its own gradient and its own
  Adam moments, as separate probes would); returns each head's validation accuracy (threshold 0.5).
- `select_heads(val_acc, top)`: top-K heads by probing validation accuracy, K a count or a fraction
  (ConfigError `recovery.top_heads` when more heads are asked than exist).
- `compensation(v, beta, b)`: c = V^T beta + b per head (modeling_llama.py:376-407); beta or b None = that term
  left out (Table 4's ablations "w/o b" and "w/o Σβv").
- Table 4's alternative head rankings (not in the reference code; see experiments/restorelcc/NOTES.md):
  `mse_scores` (mean squared dense-vs-pruned difference of each head's activations), `kl_scores` ([RECON] mean
  KL(softmax(z_dense) || softmax(z_pruned)) over each head's d_h coordinates), `random_scores` (seeded uniform
  scores: `select_heads` on them is a seeded random draw of live heads).
- `fold_bias(w_o, comps, head_dim)`: export of the compensation c_h (one d_h vector per selected head, added to
  that head's slice of the o_proj input) as an o_proj bias b_o = W_O . concat(c); heads not selected get 0.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch


def lost_basis(delta_z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V: d_h x d_h right singular vectors, rows normalised, zero-padded; lost component: d_h) of delta_z (n x d_h)."""
    n, d = delta_z.shape
    if not 1 <= k <= d:
        raise ValueError(f"k={k} must be in [1, head_dim={d}]")
    dz = delta_z.double()
    u, s, vh = torch.linalg.svd(dz, full_matrices=False)       # vh: min(n, d) x d
    kk = min(k, vh.shape[0])
    lost = ((u[:, :kk].mean(0) * s[:kk])[:, None] * vh[:kk]).sum(0)
    v = torch.zeros(d, d, dtype=torch.float64)
    v[:vh.shape[0]] = vh
    v = torch.nn.functional.normalize(v, dim=-1)
    return v.to(delta_z.dtype), lost.to(delta_z.dtype)


def pair_split(n_pairs: int, val_fraction: float = 0.3, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) pair indices, as sklearn's train_test_split(range(n), test_size=val_fraction,
    random_state=seed): a positive and its negative always fall on the same side."""
    n_val = math.ceil(val_fraction * n_pairs)
    perm = np.random.RandomState(seed).permutation(n_pairs)
    return perm[n_val:], perm[:n_val]


def hard_negatives(emb: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar other row of `emb` (n x e), first maximum on ties."""
    e = torch.nn.functional.normalize(emb.double(), dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-1.0)
    return sim.argmax(dim=1)


def word_counts(texts: list[str]) -> torch.Tensor:
    """Bag-of-words count vectors (n x vocabulary) over lower-cased \\w+ tokens."""
    toks = [re.findall(r"\w+", t.lower()) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted({w for ts in toks for w in ts}))}
    out = torch.zeros(len(texts), max(len(vocab), 1))
    for r, ts in enumerate(toks):
        for w in ts:
            out[r, vocab[w]] += 1
    return out


def train_probes(pos: torch.Tensor, neg: torch.Tensor, train_idx, val_idx, epochs: int = 200, lr: float = 0.01,
                 seed: int = 42) -> torch.Tensor:
    """Validation accuracy of one logistic probe per head. pos/neg: (heads, n_pairs, 2 d_h) features of the
    positive and negative member of each pair (label 1 / 0). Init as nn.Linear (U(+-1/sqrt(fan_in)))."""
    heads, _, dim = pos.shape
    tr, va = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    x_tr = torch.cat([pos[:, tr], neg[:, tr]], dim=1).float()
    y_tr = torch.cat([torch.ones(len(tr)), torch.zeros(len(tr))]).expand(heads, -1)
    x_va = torch.cat([pos[:, va], neg[:, va]], dim=1).float()
    y_va = torch.cat([torch.ones(len(va)), torch.zeros(len(va))])
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    init = (torch.rand(heads, dim + 1, generator=g) * 2 - 1) * bound       # row h = [w_h, b_h]
    w, b = init[:, :dim].clone().requires_grad_(), init[:, dim].clone().requires_grad_()
    opt = torch.optim.Adam([w, b], lr=lr)
    bce = torch.nn.BCELoss(reduction="none")
    for _ in range(epochs):
        opt.zero_grad()
        p = torch.sigmoid(torch.einsum("hnd,hd->hn", x_tr, w) + b[:, None])
        bce(p, y_tr).mean(dim=1).sum().backward()       # sum over heads of each head's mean loss
        opt.step()
    with torch.no_grad():
        p = torch.sigmoid(torch.einsum("hnd,hd->hn", x_va, w) + b[:, None])
        return ((p >= 0.5).float() == y_va).float().mean(dim=1)


def compensation(v, beta, b) -> torch.Tensor:
    """c = V^T beta + b for each head: v (h, d, d), beta and b (h, d) -> (h, d). beta=None: c = b (bias only);
    b=None: c = V^T beta (no bias); v is unused when beta is None."""
    if beta is None:
        return b
    c = torch.einsum("hij,hi->hj", v, beta)
    return c if b is None else c + b


def mse_scores(z_dense: torch.Tensor, z_pruned: torch.Tensor) -> torch.Tensor:
    """(..., ) mean over samples and coordinates of (z_dense - z_pruned)^2; inputs (n, ..., d_h)."""
    return (z_dense.double() - z_pruned.double()).pow(2).mean(dim=-1).mean(dim=0)


def kl_scores(z_dense: torch.Tensor, z_pruned: torch.Tensor) -> torch.Tensor:
    """(...,) mean over samples of KL(softmax(z_dense) || softmax(z_pruned)), softmax over the last (d_h) axis."""
    log_p = torch.log_softmax(z_dense.double(), dim=-1)
    log_q = torch.log_softmax(z_pruned.double(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean(dim=0)


def random_scores(shape, seed: int) -> torch.Tensor:
    """Seeded uniform scores of the given shape: ranking by them draws heads at random (reproducibly)."""
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def fold_bias(w_o: torch.Tensor, comps: dict[int, torch.Tensor], head_dim: int) -> torch.Tensor:
    """o_proj bias equal to adding comps[h] to head h's slice of the o_proj input: W_O @ concat(c)."""
    c = torch.zeros(w_o.shape[1], dtype=w_o.dtype, device=w_o.device)
    for h, vec in comps.items():
        c[h * head_dim:(h + 1) * head_dim] = vec.to(c)
    return w_o @ c


def n_selected(top, total: int) -> int:
    """`top` heads as a count (int >= 1) or a fraction (0 < float <= 1) of `total`."""
    from repro.config import ConfigError
    if isinstance(top, bool) or not isinstance(top, (int, float)):
        raise ConfigError("recovery.top_heads", top, "an int count or a float fraction in (0, 1]")
    if isinstance(top, float):
        if not 0 < top <= 1:
            raise ConfigError("recovery.top_heads", top, "a fraction in (0, 1]")
        return max(1, int(round(top * total)))
    if not 1 <= top <= total:
        raise ConfigError("recovery.top_heads", top, f"a head count in [1, {total}] (the model's heads)")
    return top


def select_heads(val_acc: torch.Tensor, top, live: torch.Tensor | None = None) -> list[int]:
    """Flat head indices ranked by validation accuracy (descending, stable), the first n_selected(top).

    `live` (bool, the shape of `val_acc`): heads a structured pruning kept. Removed heads (all-zero o_proj columns)
    are never selected — a compensation there would fold to nothing — and a fraction counts live heads only."""
    acc = val_acc.flatten().double()
    alive = torch.ones_like(acc, dtype=torch.bool) if live is None else live.flatten().bool()
    n = n_selected(top, int(alive.sum()))
    order = torch.sort(torch.where(alive, acc, float("-inf")), descending=True, stable=True).indices
    return order[:n].tolist()
