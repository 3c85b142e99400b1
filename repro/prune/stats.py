"""Statistics of a linear layer's inputs, accumulated over calibration batches by the engine's hooks.

Each kind is a small accumulator; a method asks for the kinds it needs by name (`BlockCallback.stats`).
Normalisation follows the references, per *sequence* (not per token):
- `sq_norm`  S_j = (1/N) Σ_n Σ_t x_{n,t,j}²          (Wanda's `scaler_row`, locuslab/wanda lib/layerwrapper.py)
- `hessian`  H = (2/N) Σ_n Σ_t x_{n,t} x_{n,t}ᵀ        (SparseGPT's `H`, IST-DASLab/sparsegpt sparsegpt.py:add_batch)
- `sum`      m_j = (1/N) Σ_n Σ_t x_{n,t,j}             (DSnoT's `sum_metric_row`)
- `seq_var`  v_j = (1/N) Σ_n Var_t(x_{n,t,j}) (biased)   (DSnoT's `var`: its token-weighted running mean of the
             per-call variances, one call = one sequence; zyxxmu/DSnoT lib/layerwrapper.py)
New kinds register in `STAT_KINDS`.

Deviation (float rounding only): the references keep a *running mean* (`H *= n/(n+b); x *= sqrt(2/n);
H += x xᵀ`); we accumulate the plain sum in `stats_dtype` (fp32 by default, as the references) and scale once at
the end. tests/test_engine.py checks both forms agree on a small case. On CUDA, fp16/bf16 activations enter the
Hessian product directly with fp32 output (`torch.mm(..., out_dtype=float32)`): fp16·fp16 products are exact in
fp32 and the sum is fp32, as in the references' upcast-then-multiply, but on tensor cores.

`LayerStats.cache` holds quantities derived from the statistics (e.g. SparseGPT's damped inverse Hessian) so
that linears that share one input (q/k/v, gate/up — the engine gives them one `LayerStats`) compute them once.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable

import torch


class _Accumulator:
    def __init__(self, dtype: torch.dtype):
        self.dtype, self.value, self.nseq = dtype, None, 0

    def add(self, x: torch.Tensor, nseq: int) -> None:
        contrib = self.contribution(x)
        self.value = contrib if self.value is None else self.value.add_(contrib)
        self.nseq += nseq

    def contribution(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        return self.value / self.nseq


class SqNorm(_Accumulator):
    def contribution(self, x):          # ‖x_j‖² as the reference (norm, then square), upcast inside the kernel
        return torch.linalg.vector_norm(x, dim=0, dtype=self.dtype).square()


def _gram(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """xᵀx accumulated in `dtype`; half-precision CUDA inputs use the tensor cores with an fp32 output."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and dtype == torch.float32:
        try:
            return torch.mm(x.t(), x, out_dtype=torch.float32)
        except (RuntimeError, TypeError):      # older torch without mm(out_dtype=)
            pass
    x = x.to(dtype)
    return x.t() @ x


class Hessian(_Accumulator):
    def contribution(self, x):
        return _gram(x, self.dtype)

    def result(self):
        return self.value * (2.0 / self.nseq)


class Sum(_Accumulator):
    def contribution(self, x):
        return x.to(self.dtype).sum(dim=0)


class SeqVar(_Accumulator):
    def add(self, x: torch.Tensor, nseq: int) -> None:     # x: the batch's tokens, [nseq · T, d]
        per_seq = x.reshape(nseq, -1, x.shape[-1]).to(self.dtype)
        contrib = torch.var(per_seq, dim=1, unbiased=False).sum(dim=0)
        self.value = contrib if self.value is None else self.value.add_(contrib)
        self.nseq += nseq


STAT_KINDS = {"sq_norm": SqNorm, "hessian": Hessian, "sum": Sum, "seq_var": SeqVar}


class LayerStats:
    def __init__(self, kinds: Iterable[str], dtype: torch.dtype = torch.float32):
        unknown = set(kinds) - set(STAT_KINDS)
        if unknown:
            raise KeyError(f"unknown statistics {sorted(unknown)}; valid: {sorted(STAT_KINDS)}")
        self._acc: Dict[str, _Accumulator] = {k: STAT_KINDS[k](dtype) for k in kinds}
        self.cache: dict = {}

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
    def kinds(self) -> frozenset:
        return frozenset(self._acc)

    @property
    def nseq(self) -> int:
        return max((a.nseq for a in self._acc.values()), default=0)

    def derived(self, key: str, compute: Callable[["LayerStats"], object]):
        """`compute(self)` once per key; linears sharing these statistics share the result."""
        if key not in self.cache:
            self.cache[key] = compute(self)
        return self.cache[key]

    def check_finite(self, where: str) -> None:
        for kind, acc in self._acc.items():
            if acc.value is not None and not torch.isfinite(acc.value).all():
                raise FloatingPointError(f"NaN/Inf in the `{kind}` statistics of {where}")
