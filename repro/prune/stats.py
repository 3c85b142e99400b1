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

Multi-objective runs (MOSP, Extension 1) give each linear one accumulator set per calibration domain
(`LayerStats.parts`), filled in the same calibration pass; `stats[kind]` then pools them.

`LayerStats.cache` holds quantities derived from the statistics (e.g. SparseGPT's damped inverse Hessian) so
that linears that share one input (q/k/v, gate/up — the engine gives them one `LayerStats`) compute them once.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

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


GRAM_CHUNK = 384          # CPU Gram matrices wider than ~1.5 chunks are computed as upper strips of this width


def _gram(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """xᵀx accumulated in `dtype`; half-precision CUDA inputs use the tensor cores with an fp32 output."""
    if x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and dtype == torch.float32:
        try:
            return torch.mm(x.t(), x, out_dtype=torch.float32)
        except (RuntimeError, TypeError):      # older torch without mm(out_dtype=)
            pass
    x = x.to(dtype)
    d = x.shape[1]
    k = round(d / GRAM_CHUNK) if x.device.type == "cpu" and dtype == torch.float32 else 1
    if k < 2:
        return x.t() @ x
    # fp32 on CPU: only the upper strips, mirrored (the Gram matrix is symmetric): (k+1)/2k of the flops, 40 % less
    # CPU time for d = 1536 (SparseGPT's down_proj Hessian). Bit-identical to the full product with MKL (checked by
    # tests/test_engine.py; not so for fp64, which keeps the full product): each entry is the same dot product
    # in the same order, and the full product is itself exactly symmetric.
    out = torch.empty(d, d, dtype=dtype, device=x.device)
    edges = [d * i // k for i in range(k + 1)]
    for a0, a1 in zip(edges[:-1], edges[1:]):
        out[a0:a1, a0:] = x[:, a0:a1].t() @ x[:, a0:]
        out[a1:, a0:a1] = out[a0:a1, a1:].t()
    return out


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


class _Fixed(_Accumulator):
    """A statistic given as its final value (`LayerStats.weighted`)."""

    def __init__(self, value: torch.Tensor):
        super().__init__(value.dtype)
        self.value, self.nseq = value, 1

    def result(self) -> torch.Tensor:
        return self.value


STAT_KINDS = {"sq_norm": SqNorm, "hessian": Hessian, "sum": Sum, "seq_var": SeqVar}


class LayerStats:
    """Statistics of one input. With `domains` > 0 (multi-objective runs: one calibration set per domain), each
    domain accumulates separately in `parts[d]` (normalised by its own sequence count) and `stats[kind]` is the
    pooled statistic over all domains' sequences — what a single-objective method sees."""

    def __init__(self, kinds: Iterable[str], dtype: torch.dtype = torch.float32, domains: int = 0):
        unknown = set(kinds) - set(STAT_KINDS)
        if unknown:
            raise KeyError(f"unknown statistics {sorted(unknown)}; valid: {sorted(STAT_KINDS)}")
        self._acc: Dict[str, _Accumulator] = {k: STAT_KINDS[k](dtype) for k in kinds}
        self.parts = [LayerStats(kinds, dtype) for _ in range(domains)]
        self.cache: dict = {}

    def add(self, x: torch.Tensor, nseq: int, domain: Optional[int] = None) -> None:
        if self.parts:
            self.parts[domain].add(x, nseq)
            return
        for acc in self._acc.values():
            acc.add(x, nseq)

    def __getitem__(self, kind: str) -> torch.Tensor:
        acc = self._acc[kind]
        if self.parts and acc.value is None:
            pooled = STAT_KINDS[kind](acc.dtype)
            pooled.value = sum(p._acc[kind].value for p in self.parts if p._acc[kind].value is not None)
            pooled.nseq = sum(p._acc[kind].nseq for p in self.parts)
            acc = pooled if pooled.nseq else acc
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
        if self.parts:
            return sum(p.nseq for p in self.parts)
        return max((a.nseq for a in self._acc.values()), default=0)

    def weighted(self, weights, per_token: bool = False) -> "LayerStats":
        """Σ_d w_d · (statistic of domain d) as a fresh LayerStats (no parts): Extension 1's H_λ = Σ_d λ_d H_d.
        `per_token` weighs each domain's sum over its own sequences instead of its per-sequence mean."""
        out = LayerStats(self.kinds, next(iter(self._acc.values())).dtype if self._acc else torch.float32)
        for kind in self._acc:
            total = sum(w * p[kind] * (p.nseq if per_token else 1) for w, p in zip(weights, self.parts) if w)
            out._acc[kind] = _Fixed(total)
        return out

    def to(self, device) -> "LayerStats":
        """Move the accumulated values (and every domain's) to `device`, in place; drops derived quantities."""
        self.cache.clear()
        for acc in self._acc.values():
            if acc.value is not None:
                acc.value = acc.value.to(device)
        for part in self.parts:
            part.to(device)
        return self

    def derived(self, key: str, compute: Callable[["LayerStats"], object]):
        """`compute(self)` once per key; linears sharing these statistics share the result."""
        if key not in self.cache:
            self.cache[key] = compute(self)
        return self.cache[key]

    def check_finite(self, where: str) -> None:
        for d, part in enumerate(self.parts):
            part.check_finite(f"{where} (domain {d})")
        for kind, acc in self._acc.items():
            if acc.value is not None and not torch.isfinite(acc.value).all():
                raise FloatingPointError(f"NaN/Inf in the `{kind}` statistics of {where}")
