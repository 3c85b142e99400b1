"""Statistics of a linear layer's inputs, accumulated over calibration batches by the engine's hooks.

Each kind is a small accumulator; a method asks for the kinds it needs by name (`BlockCallback.stats`).
Normalisation follows the references, per *sequence* (not per token):
- `sq_norm`  S_j = (1/N) Σ_n Σ_t x_{n,t,j}²          (Wanda's `scaler_row`; ‖X_j‖₂ = sqrt(S_j) up to √N)
- `hessian`  H = (2/N) Σ_n Σ_t x_{n,t} x_{n,t}ᵀ        (SparseGPT's `H`)
- `sum`      m_j = (1/N) Σ_n Σ_t x_{n,t,j}             (DSnoT's `sum_metric_row`)
New kinds register in `STAT_KINDS`.
"""
from __future__ import annotations

from typing import Dict, Iterable

import torch


class _Accumulator:
    def __init__(self, dtype: torch.dtype):
        self.dtype, self.value, self.nseq = dtype, None, 0

    def add(self, x: torch.Tensor, nseq: int) -> None:
        x = x.to(self.dtype)
        contrib = self.contribution(x)
        self.value = contrib if self.value is None else self.value + contrib
        self.nseq += nseq

    def contribution(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        return self.value / self.nseq


class SqNorm(_Accumulator):
    def contribution(self, x):
        return (x * x).sum(dim=0)


class Hessian(_Accumulator):
    def contribution(self, x):
        return x.t() @ x

    def result(self):
        return self.value * (2.0 / self.nseq)


class Sum(_Accumulator):
    def contribution(self, x):
        return x.sum(dim=0)


STAT_KINDS = {"sq_norm": SqNorm, "hessian": Hessian, "sum": Sum}


class LayerStats:
    def __init__(self, kinds: Iterable[str], dtype: torch.dtype = torch.float32):
        unknown = set(kinds) - set(STAT_KINDS)
        if unknown:
            raise KeyError(f"unknown statistics {sorted(unknown)}; valid: {sorted(STAT_KINDS)}")
        self._acc: Dict[str, _Accumulator] = {k: STAT_KINDS[k](dtype) for k in kinds}

    def add(self, x: torch.Tensor, nseq: int) -> None:
        for acc in self._acc.values():
            acc.add(x, nseq)

    def __getitem__(self, kind: str) -> torch.Tensor:
        acc = self._acc[kind]
        if acc.value is None:
            raise RuntimeError(f"statistic {kind!r} was requested but no calibration batch reached this layer")
        return acc.result()

    def __contains__(self, kind: str) -> bool:
        return kind in self._acc

    @property
    def nseq(self) -> int:
        return max((a.nseq for a in self._acc.values()), default=0)

    def check_finite(self, where: str) -> None:
        for kind, acc in self._acc.items():
            if acc.value is not None and not torch.isfinite(acc.value).all():
                raise FloatingPointError(f"NaN/Inf in the `{kind}` statistics of {where}")
