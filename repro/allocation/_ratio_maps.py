"""Pure maths shared by the allocators: score → sparsity maps, the heavy-tail estimator, the first-minimum pick.

Everything here is a function of plain numbers / tensors (no model, no engine) so the tests can pin the formulas.
References (read, not copied): luuyin/OWL lib/prune_all.py (outlier ratio, min-max map, clamp),
eliacunegatti/NeuroAL lib/utils.py:206-244 (get_sparsity_owl), lib/neuroal.py:6-100 (block ramp, row map),
sparsity_distribution.py:73-76 (argmin), haiquanlu/AlphaPruning lib/esd_utils.py:69-184 (net_esd_estimator,
`fix_fingers='xmin_peak'`) and lib/prune.py:152-187 (ww_sparsity).

Deviation (all maps): when every score is equal, max − min = 0 and the references divide by zero (NaN
sparsities); here the map returns the uniform sparsity instead.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

CLAMPS = ("owl", "neuronal", "none")


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """OWL's layer outlier ratio in percent: share of the concatenated scores above M · mean(scores)."""
    flat = torch.cat([s.flatten().float() for s in scores])
    threshold = flat.mean() * m
    return 100.0 * float((flat > threshold).sum().item()) / flat.numel()


def _centered_minmax(values: Sequence[float], lam: float, sparsity: float) -> List[float]:
    """Density ρ_i = (v_i − min)/(max − min) · 2λ − mean(·) + (1 − s) (the OWL map; mean density = 1 − s)."""
    v = torch.tensor(list(values), dtype=torch.float64)
    span = float(v.max() - v.min())
    if span == 0.0:
        return [1.0 - sparsity] * len(v)
    d = (v - v.min()) * (1.0 / span * lam * 2)
    d = d - d.mean() + (1.0 - sparsity)
    return d.tolist()


def clamp_sparsity(s: float, clamp: str) -> float:
    """`owl`: s <= 0 → 0.01, no upper clamp (OWL prune_all.py); `neuronal`: s <= 0 → 0.01, s >= 1 → 0.99
    (NeuroAL get_sparsity_owl / get_distribution_block); `none`: unchanged."""
    if clamp == "none":
        return s
    if s <= 0:
        return 0.01
    if clamp == "neuronal" and s >= 1:
        return 0.99
    return s


def owl_sparsities(outlier_ratios: Sequence[float], sparsity: float, lam: float, clamp: str = "owl") -> List[float]:
    """Per-block sparsity s_l = 1 − ρ_l: more outliers → denser block; s_l ∈ [s − λ, s + λ], mean s."""
    return [clamp_sparsity(1.0 - d, clamp) for d in _centered_minmax(outlier_ratios, lam, sparsity)]


def linear_ramp_sparsities(nblocks: int, sparsity: float, lam: float) -> List[float]:
    """NeuronAL's block profile: the OWL map applied to b_l = l + 1, densities sorted descending (block 0 densest),
    NeuronAL's clamp to [0.01, 0.99]; i.e. s_l = s − λ + 2λ·l/(L − 1)."""
    density = sorted(_centered_minmax(range(1, nblocks + 1), lam, sparsity), reverse=True)
    return [clamp_sparsity(1.0 - d, "neuronal") for d in density]


def row_sparsities(alignment: torch.Tensor, layer_sparsity: float, lam: float) -> torch.Tensor:
    """NeuronAL's row map: a row whose downstream channel lost more activation (larger dense − sparse) is denser.

    ρ_r = (g_r − min)/(max − min)·2λ − mean + (1 − s); s_r = clip(1 − ρ_r, 0.01, 0.99). A layer whose alignment
    sums to 0 keeps uniform rows (as the reference); so does a constant alignment (reference: NaN).
    """
    g = alignment.detach().to(torch.float64).cpu()
    if float(g.sum()) == 0.0 or float(g.max() - g.min()) == 0.0:
        return torch.full_like(g, layer_sparsity)
    d = (g - g.min()) / (g.max() - g.min()) * lam * 2
    d = d - (d.mean() - (1.0 - layer_sparsity))
    return torch.clamp(1.0 - d, 0.01, 0.99)


def first_argmin(values: Sequence[float]) -> int:
    """Index of the first minimum (list order), as `np.argmin` in the reference."""
    best = 0
    for i, v in enumerate(values):
        if v < values[best]:
            best = i
    return best


def neuron_alignment(dense: torch.Tensor, sparse: torch.Tensor) -> float:
    """NA = ‖a_d/Σa_d − a_s/Σa_s‖₂ / dim(a) (NeuroAL lib/neuroal.py:168-170)."""
    diff = dense / dense.sum() - sparse / sparse.sum()
    return float(torch.norm(diff, p=2).item()) / dense.numel()


def hill_alpha_peak(eigs: torch.Tensor, bins: int = 100, log10_xmin_quirk: bool = True) -> float:
    """Power-law exponent of an ESD with AlphaPruning's `xmin_peak` search (esd_utils.py, fix_fingers='xmin_peak').

    `eigs` are the squared singular values. xmin candidates lie between the peak of the log10 histogram and
    1.5 × its value; for each, the Hill estimate α = 1 + n / (Σ_{k≥i} ln λ_k − n ln λ_i) and, if α > 1, the KS
    distance D = max |1 − (λ/xmin)^{1−α} − k/n|; the α of the first minimal D wins (D defaults to 1). Vectorised over the candidates (suffix sums by
    cumsum instead of one sum per candidate: float32 rounding may differ in the last bits).
    `log10_xmin_quirk=True` replicates the reference's lower bound `log10(0.95·xmin_peak)`, a log value compared
    with raw eigenvalues; False uses the intended `0.95·xmin_peak`.
    """
    e = torch.sort(eigs.to(torch.float32).flatten())[0]
    n_all = e.numel()
    log_e = torch.log(e)
    h = torch.log10(e)
    lo, hi = h.min(), h.max()
    counts = torch.histc(h, bins, min=float(lo), max=float(hi))
    edges = torch.linspace(float(lo), float(hi), bins + 1)
    xmin_peak = 10 ** edges[torch.argmax(counts)]
    xmin_min = torch.log10(0.95 * xmin_peak) if log10_xmin_quirk else 0.95 * xmin_peak
    xmin_max = 1.5 * xmin_peak
    # all candidates at once (the reference loops): xmin = e[i], i < N − 1, within [xmin_min, xmin_max]
    xmins = e[:-1]
    n = (n_all - torch.arange(n_all - 1)).to(torch.float32)
    suffix = torch.flip(torch.cumsum(torch.flip(log_e, [0]), 0), [0])[:-1]      # Σ_{k≥i} ln λ_k
    valid = (xmins >= xmin_min) & (xmins <= xmin_max)
    alphas = torch.where(valid, 1 + n / (suffix - n * log_e[:-1]), torch.zeros_like(n))
    ds = torch.ones(n_all - 1)
    rows = (valid & (alphas > 1)).nonzero().flatten()
    if rows.numel():
        k = torch.arange(n_all)
        offset = (k.view(1, -1) - rows.view(-1, 1)).to(torch.float32)           # k − i
        ratio = e.view(1, -1) / xmins[rows].view(-1, 1)
        fit = torch.abs(1 - ratio ** (1 - alphas[rows]).view(-1, 1) - offset / n[rows].view(-1, 1))
        ds[rows] = torch.where(offset >= 0, fit, torch.zeros_like(fit)).max(dim=1)[0]
    return float(alphas[torch.argmin(ds)].item())


def alpha_sparsities(metrics: Sequence[float], numels: Sequence[int], sparsity: float, epsilon: float,
                     clamp: bool = False) -> List[float]:
    """AlphaPruning's map: min-max α → [1 − ε, 1 + ε], then scaled so the parameter-weighted mean is `sparsity`.
    Higher α → more pruning. No clamp in the reference (a layer can exceed 1 at high s); `clamp` limits to
    [0, 0.99] after the rescale (then the mean is no longer exact)."""
    scores = torch.tensor(list(metrics), dtype=torch.float64)
    sizes = torch.tensor(list(numels), dtype=torch.float64)
    span = float(scores.max() - scores.min())
    if span == 0.0:
        ratios = torch.ones_like(scores)
    else:
        ratios = (scores - scores.min()) / span * (2 * epsilon) + (1 - epsilon)
    ratios = ratios * (sizes.sum() * sparsity / (sizes * ratios).sum())
    out = ratios.tolist()
    return [min(max(r, 0.0), 0.99) for r in out] if clamp else out



def check_layer_ratios(field: str, value, ratios: Sequence[float], target: float, expected: str,
                       weights: Optional[Sequence[float]] = None, tol: float = 1e-6) -> None:
    """Per-layer sparsities must lie in [0, 1) and average (weighted by `weights`, e.g. parameter counts) to
    `target` within `tol`; else a ConfigError on the setting that produced them (`field` = `value`), naming the
    offending layers / the mean."""
    from repro.config import ConfigError

    r = torch.tensor(list(ratios), dtype=torch.float64)
    bad = [(i, float(x)) for i, x in enumerate(r.tolist()) if not 0.0 <= x < 1.0]
    if bad:
        shown = ", ".join(f"#{i}: {x:.6f}" for i, x in bad[:4]) + (" ..." if len(bad) > 4 else "")
        raise ConfigError(field, value, expected, f"layer sparsities outside [0, 1): {shown}")
    w = torch.ones_like(r) if weights is None else torch.tensor(list(weights), dtype=torch.float64)
    mean = float((r * w).sum() / w.sum())
    if abs(mean - target) > tol:
        raise ConfigError(field, value, expected, f"mean layer sparsity {mean:.9f} misses the target {target} "
                                                  f"by more than {tol:g}")
