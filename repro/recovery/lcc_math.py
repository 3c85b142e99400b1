"""Pure math for RestoreLCC (recovery=restorelcc; reference zijian678/restorelcc, see
/work/shared/research/losa_restorelcc.md §2-§3). No model code here.

- `lost_basis(delta_z, k)`: per-head SVD of dZ = Z_dense - Z_pruned (n samples x d_h, the head's slice of the
  o_proj input at the last prompt token); returns the top-k right singular vectors V (k x d_h) and the lost
  component = mean over samples of the projection of dZ onto span(V). k: paper K=1, reference code k=10.
- `pair_split(n_pairs, train_frac, seed)`: pair-preserving 70/30 split for contrastive probing (a positive and its
  negative never fall on different sides). Seed 42 as the reference.
- `select_heads(val_acc, top)`: top-K heads by probing validation accuracy, K a count or a fraction
  (ConfigError `recovery.top_heads` when more heads are asked than exist).
- `fold_bias(w_o, comps, head_dim)`: export of the compensation c_h (one d_h vector per selected head, added to
  that head's slice of the o_proj input) as an o_proj bias b_o = W_O . concat(c); heads not selected get 0.
"""
from __future__ import annotations

import torch


def lost_basis(delta_z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors (k x d_h) of delta_z (n x d_h) and the mean projection onto them (d_h)."""
    if not 1 <= k <= delta_z.shape[1]:
        raise ValueError(f"k={k} must be in [1, head_dim={delta_z.shape[1]}]")
    dz = delta_z.double()
    _, _, vh = torch.linalg.svd(dz, full_matrices=False)
    v = vh[:k]                                   # k x d_h, orthonormal rows
    lost = (dz @ v.T @ v).mean(dim=0)            # mean of the per-sample projections
    return v.to(delta_z.dtype), lost.to(delta_z.dtype)


def pair_split(n_pairs: int, train_frac: float = 0.7, seed: int = 42) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the pairs in the train and validation sides (each pair = one positive + its negative)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_pairs, generator=g)
    n_train = int(round(train_frac * n_pairs))
    return perm[:n_train], perm[n_train:]


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


def select_heads(val_acc: torch.Tensor, top) -> list[int]:
    """Flat head indices ranked by validation accuracy (descending, stable), the first n_selected(top)."""
    n = n_selected(top, val_acc.numel())
    order = torch.sort(val_acc.flatten(), descending=True, stable=True).indices
    return order[:n].tolist()
