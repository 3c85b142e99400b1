"""Preference grids, Pareto fronts and hypervolume for multi-objective runs, through pymoo (maintained library):
`pymoo.util.ref_dirs.get_reference_directions("das-dennis", …)`, `NonDominatedSorting`, `pymoo.indicators.hv.HV`.
All objectives are minimised (perplexities)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np


def preference_grid(m: int, partitions: Optional[int] = None, explicit: Optional[list] = None) -> List[List[float]]:
    """The explicit grid, or the Das–Dennis simplex lattice (10 partitions for 2 objectives: λ₁ ∈ {0, 0.1, …, 1};
    4 for 3 or more: step 0.25, 15 points for 3 objectives) — the research note's default (§2.6)."""
    if explicit:
        return [[float(v) for v in lam] for lam in explicit]
    from pymoo.util.ref_dirs import get_reference_directions

    p = partitions or (10 if m == 2 else 4)
    dirs = get_reference_directions("das-dennis", m, n_partitions=p)
    return [[round(float(v), 12) for v in row] for row in dirs]


def pareto_front(F: Sequence[Sequence[float]]) -> List[int]:
    """Indices of the non-dominated rows of F (minimisation), in input order."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = np.asarray(F, dtype=float)
    if len(F) == 0:
        return []
    return sorted(int(i) for i in NonDominatedSorting().do(F, only_non_dominated_front=True))


def hypervolume(F: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume dominated by F inside the box bounded by `reference` (points beyond it add nothing)."""
    from pymoo.indicators.hv import HV

    F = np.asarray(F, dtype=float)
    ref = np.asarray(reference, dtype=float)
    inside = F[(F < ref).all(axis=1)] if len(F) else F
    return float(HV(ref_point=ref)(inside)) if len(inside) else 0.0


REFERENCE_RULE = ("reference point = hv_factor × the worst (largest) perplexity per domain over the SparseGPT "
                  "Extension-1 preference models of the same model, sparsity, pattern, domains and protocol")


def reference_point(baseline_F: Sequence[Sequence[float]], factor: float) -> List[float]:
    """The HV reference rule (research note §2.6, [RECON]): factor × the baseline's worst value per objective."""
    return [factor * float(v) for v in np.asarray(baseline_F, dtype=float).max(axis=0)]
