"""SparseGPT (Frantar & Alistarh, ICML 2023): OBS pruning with a damped inverse Hessian, block by block.

Reference: IST-DASLab/sparsegpt sparsegpt.py (`SparseGPT.add_batch`, `fasterprune`, lines 32-138); the copies in
locuslab/wanda lib/sparsegpt.py and the NeuronAL/OWL repos are the same algorithm. Sample config:
`python -m repro.run env=offline score=sparsegpt sparsity=0.5` (conf/score/sparsegpt.yaml: percdamp, blocksize).

Algorithm, per linear W [rows, cols], with H = (2/N) Σ x xᵀ from the engine's `hessian` statistic:
1. dead columns (H_jj = 0): H_jj = 1, W[:, j] = 0;
2. H += percdamp · mean(diag H) · I; Hinv = upper Cholesky factor of H⁻¹ (cholesky → cholesky_inverse →
   cholesky(upper=True)), all in fp32;
3. for each block of `blocksize` columns: unstructured — score W1²/diag(Hinv1)² over the whole rows×block
   (W1 already updated by earlier blocks), prune `score <= sort(score)[int(numel·s)]`; N:M — at every column
   i % M == 0 of the block, prune the N lowest scores of the next M columns per row (`torch.topk`, on the
   updated W1); then the OBS update err = (w − q)/d, W1[:, i:] −= err ⊗ Hinv1[i, i:], and after the block
   W[:, i2:] −= Err1 @ Hinv[i1:i2, i2:];
4. cast back to the weight dtype.

Deviations (all exact in exact arithmetic; float rounding differs):
- The column-by-column update is done `SEGMENT` (32) columns at a time (M columns for N:M, whose mask is
  chosen at the start of each group of M, as in the reference): inside a segment the mask is fixed, so the
  loop is one batched triangular solve — row r's errors satisfy e_S · Hinv1[S, S] = w_S on its pruned set S
  (forward substitution = the reference loop) and the kept weights are w − e · Hinv1 — followed by one matmul
  update of the block's later columns (the reference's own lazy-block trick, one level down). No Python loop
  over columns; rows are processed in chunks to bound memory. In float64 the masks equal the column loop's
  exactly; in fp32 the rounding differs from the loop's, so on large layers a rare near-tie at a block threshold
  can flip (4096 × 4096 random layer: 102 of 16.8 M mask entries, one flip cascading along its row;
  benchmarks/RESULTS.md).
- N:M (issue #19): the mask of each group of M columns still depends on the updates of the earlier groups (it
  is chosen from the current W1 when the group is reached, as in the reference), so groups stay sequential; what
  is batched is everything else (`nm_block`): the group's OBS errors come from one matmul against closed-form
  solutions precomputed for every block, group and each of the C(M, N) pruned sets (fp64 2×2 inverses for 2:4);
  the updates of later columns are applied within a 32-column sub-block per group and to the rest of the block
  once per sub-block; the kept weights of the block come from one matmul at its end. On CPU the group's N lowest
  scores come from pairwise comparisons instead of `torch.topk` (same set whenever the group has no tie and no
  NaN — checked per group; otherwise topk decides, so ties break exactly as before). Same masks as the golden
  fixtures (tests/test_golden.py); weights within ~2e-6 of the segmented solve's.
- Linears that share one Hessian (q/k/v, gate/up: the engine shares their statistics) share one damped inverse
  and are updated together (rows stacked; the mask is still chosen per linear and per block). Rows are
  independent in OBS, so this is the same computation.
- The unstructured threshold is the reference's `sort(score)[k]` (`repro.prune.masks.kth_smallest`: kthvalue on
  CPU, a sort on CUDA — same value). Like the reference, a target of 0 still prunes the block's minimum score(s)
  (`score <= sort(score)[0]`).
- `stats_dtype=float64` accumulates H in fp64; the algorithm itself still runs in fp32 like the reference.
- Per-row targets (a tensor, e.g. from a row allocator; the references never do this — NeuronAL skips its row
  step for SparseGPT): in every block, row r prunes all but its floor((1 − s_r)·block) highest scores
  (the shared per-row mask rule), so each row reaches its own sparsity block by block.
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from repro.config import ConfigError, check_range
from repro.methods.base import MethodConfig, Scorer, Target
from repro.prune.masks import is_fixed_mask, keep_highest_per_row, prune_up_to_kth
from repro.prune.stats import LayerStats
from repro.registry import register

log = logging.getLogger(__name__)

SEGMENT = 32                          # columns per batched triangular solve (unstructured); N:M uses M
ROW_CHUNK_ELEMENTS = 1 << 25          # rows × block² elements of the batched triangular systems (128 MB in fp32)


@dataclass
class SparseGPTConfig(MethodConfig):
    name: str = "sparsegpt"
    percdamp: float = 0.01               # damping = percdamp · mean(diag H)
    blocksize: int = 128                 # columns per lazy-update block (and per mask-selection block)

    def __post_init__(self):
        check_range("score.percdamp", self.percdamp, lo=0.0)
        check_range("score.blocksize", self.blocksize, lo=1)


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(upper Cholesky factor of (H + damp·I)⁻¹, dead-column mask), in fp32, with the references' dead rule."""
    H = hessian.to(torch.float32).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise torch.linalg.LinAlgError(f"Hessian is not positive definite (leading minor {int(info)}); "
                                       f"raise score.percdamp (now {percdamp})")
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True), dead


def solve_segment(W1: torch.Tensor, Hinv1: torch.Tensor, mask1: torch.Tensor):
    """The reference's column loop over a few columns with a fixed mask, as one batched triangular solve.

    W1 [rows, b] (already updated by earlier columns), Hinv1 [b, b] upper triangular, mask1 [rows, b] (True =
    prune). Row r's errors e solve e_S · Hinv1[S, S] = w_S on its pruned set S (forward substitution, i.e. the
    loop err = (w − q)/d, W1[:, i:] −= err ⊗ Hinv1[i, i:]); the kept weights become w − e · Hinv1.
    Returns (Q1, Err1): the segment's final weights and the errors that update later columns.
    """
    rows, b = W1.shape
    m = mask1.to(W1.dtype)
    Q1, Err1 = torch.empty_like(W1), torch.empty_like(W1)
    chunk = max(1, ROW_CHUNK_ELEMENTS // (b * b))
    for r0 in range(0, rows, chunk):
        mr, wr = m[r0:r0 + chunk], W1[r0:r0 + chunk]
        A = Hinv1.unsqueeze(0) * mr.unsqueeze(2)
        A *= mr.unsqueeze(1)
        A.diagonal(dim1=1, dim2=2).add_(1 - mr)                  # identity on kept columns: their error is 0
        err = torch.linalg.solve_triangular(A, (wr * mr).unsqueeze(1), upper=True, left=False).squeeze(1)
        Err1[r0:r0 + chunk] = err
        Q1[r0:r0 + chunk] = (wr - err @ Hinv1) * (1 - mr)
    return Q1, Err1


def obs_block(W1: torch.Tensor, Hinv1: torch.Tensor, segment: int, select_mask):
    """One lazy-update block: segments of `segment` columns are solved in turn, each followed by the update of
    the block's later columns. `select_mask(j0, j1, W1_seg)` returns the segment's mask from its current
    (updated) weights. W1 is updated in place. Returns (Q1, Err1) for the whole block."""
    b = W1.shape[1]
    Q1, Err1 = torch.empty_like(W1), torch.empty_like(W1)
    for j0 in range(0, b, segment):
        j1 = min(j0 + segment, b)
        mask = select_mask(j0, j1, W1[:, j0:j1])
        Q1[:, j0:j1], Err1[:, j0:j1] = solve_segment(W1[:, j0:j1], Hinv1[j0:j1, j0:j1], mask)
        if j1 < b:
            W1[:, j1:] -= Err1[:, j0:j1] @ Hinv1[j0:j1, j1:]
    return Q1, Err1


MAX_NM_PATTERNS = 256                 # N:M with at most this many C(M, N) masks per group uses the pattern tables
NM_SUBBLOCK = 32                      # N:M: columns whose in-block updates are applied group by group


@lru_cache(maxsize=None)
def _nm_patterns(n: int, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The C(m, n) pruned sets of one group as masks [P, m], and the set's number for each of the 2^m masks
    written as bits Σ 2^j (−1 for masks that do not prune exactly n)."""
    sets = list(itertools.combinations(range(m), n))
    masks = torch.zeros(len(sets), m, dtype=torch.bool)
    lut = torch.full((2 ** m,), -1, dtype=torch.long)
    for p, st in enumerate(sets):
        masks[p, list(st)] = True
        lut[sum(1 << j for j in st)] = p
    return masks, lut


def nm_solution_tables(Hinv1: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """For every group g of m columns of the block and every pruned set p: the m × m matrix K[g, p] with
    e = w · K[g, p] the group's OBS errors (e_S · U_SS = w_S on the pruned set S, 0 elsewhere; U = the group's
    diagonal block of Hinv1: the reference's column loop over the group, solved in closed form), laid out
    [G, m, P·m] so that one matmul gives every set's errors at once. Solved in fp64, stored in Hinv1's dtype."""
    masks, _ = _nm_patterns(n, m)
    b = Hinv1.shape[0]
    G, P = b // m, masks.shape[0]
    U = torch.diagonal(Hinv1.reshape(G, m, G, m), dim1=0, dim2=2).permute(2, 0, 1).double()   # [G, m, m]
    S = torch.zeros(P, m, n, dtype=U.dtype, device=U.device)                                   # one-hot columns
    S[masks.nonzero(as_tuple=True) + (torch.arange(n).repeat(P),)] = 1
    U_SS = S.transpose(1, 2) @ U.unsqueeze(1) @ S                                               # [G, P, n, n]
    eye = torch.eye(n, dtype=U.dtype, device=U.device).expand_as(U_SS)
    K = S @ torch.linalg.solve_triangular(U_SS, eye, upper=True) @ S.transpose(1, 2)           # [G, P, m, m]
    return K.permute(0, 2, 1, 3).reshape(G, m, P * m).to(Hinv1.dtype)


def nm_group_sets(score: torch.Tensor, n: int, bits: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """The number of the pruned set of every row of `score` [rows, m]: the n lowest, as `torch.topk(score, n,
    largest=False)` picks them. On CPU topk costs ~0.3 µs per row; ranks from pairwise comparisons are ~10×
    cheaper and give the same set whenever a row has no tie and no NaN (checked; otherwise topk decides)."""
    m = score.shape[1]
    if score.device.type == "cpu":
        rank = (score.unsqueeze(1) < score.unsqueeze(2)).sum(2)            # entries strictly below each entry
        if int(rank.sum()) == score.shape[0] * m * (m - 1) // 2:          # every pair strictly ordered
            return lut[((rank < n) * bits).sum(1)]
    idx = torch.topk(score, n, dim=1, largest=False)[1]
    return lut[bits[idx].sum(1)]


def nm_block(W1: torch.Tensor, Hinv1: torch.Tensor, n: int, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """One lazy-update block for the N:M pattern: the group-by-group recursion (masks of later groups depend on
    the updates of earlier ones, as in the reference) with as few operations per group as possible — it is
    latency-bound, 32 groups of 4 columns per block. Per group: the reference's scores on the current W1 and its
    n lowest (`nm_group_sets`), that set's OBS errors from one matmul against the precomputed solutions of
    every set (`nm_solution_tables`), and the update of the next columns of the `NM_SUBBLOCK`; the rest of
    the block is updated once per sub-block (the lazy-block trick one level down). The kept weights of the
    whole block come from one matmul at the end: for kept column c, q_c = w_c − Σ_{j<c} e_j U_jc =
    (W1₀ − Err1 · Hinv1)_c, since Hinv1 is upper triangular and e_c = 0."""
    rows, b = W1.shape
    masks, lut = (t.to(W1.device) for t in _nm_patterns(n, m))
    bits = (2 ** torch.arange(m, device=W1.device)).long()
    P = masks.shape[0]
    tables = nm_solution_tables(Hinv1, n, m)
    d2 = torch.diag(Hinv1).reshape(1, -1) ** 2
    W0 = W1.clone()
    Err1 = torch.empty_like(W1)
    chosen = torch.empty(rows, b // m, dtype=torch.long, device=W1.device)
    sub = max(m, NM_SUBBLOCK // m * m)
    for s0 in range(0, b, sub):
        s1 = min(s0 + sub, b)
        for j0 in range(s0, s1, m):
            j1, g = j0 + m, j0 // m
            wg = W1[:, j0:j1]
            p = nm_group_sets(wg ** 2 / d2[:, j0:j1], n, bits, lut)
            chosen[:, g] = p
            err = torch.gather((wg @ tables[g]).view(rows, P, m), 1, p.view(rows, 1, 1).expand(rows, 1, m))
            Err1[:, j0:j1] = err.view(rows, m)
            if j1 < s1:
                W1[:, j1:s1] -= Err1[:, j0:j1] @ Hinv1[j0:j1, j1:s1]
        if s1 < b:
            W1[:, s1:] -= Err1[:, s0:s1] @ Hinv1[s0:s1, s1:]
    Q1 = (W0 - Err1 @ Hinv1).masked_fill_(masks[chosen].view(rows, b), 0)
    return Q1, Err1


def _block_scores(W1: torch.Tensor, Hinv1: torch.Tensor) -> torch.Tensor:
    return W1 ** 2 / torch.diag(Hinv1).reshape(1, -1) ** 2


def _select_block_mask(score: torch.Tensor, slices: List[slice], targets: List[Target],
                       columns: slice) -> torch.Tensor:
    mask = torch.zeros_like(score, dtype=torch.bool)
    for sl, target in zip(slices, targets):
        s = score[sl]
        if is_fixed_mask(target):                                   # a given mask: OBS only updates the rest
            mask[sl] = target[:, columns].to(score.device)
        elif isinstance(target, torch.Tensor):
            mask[sl] = keep_highest_per_row(s, target)
        else:
            mask[sl] = prune_up_to_kth(s, int(s.numel() * float(target)))   # the reference's rule, even for k = 0
    return mask


def _check_blocksize(blocksize: int, n: int, m: int) -> None:
    if n and blocksize % m:
        raise ConfigError("score.blocksize", blocksize, f"a multiple of M = {m} for the {n}:{m} pattern")


@torch.no_grad()
def sparsegpt_prune(W: torch.Tensor, hinv: torch.Tensor, dead: torch.Tensor, slices: List[slice],
                    targets: List[Target], n: int = 0, m: int = 0, blocksize: int = 128) -> torch.Tensor:
    """Prune the fp32 matrix `W` (rows of one or more linears stacked; `slices` says which) and return it."""
    W = W.clone()
    W[:, dead] = 0
    cols = W.shape[1]
    _check_blocksize(blocksize, n, m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        if not n:
            mask1 = _select_block_mask(_block_scores(W1, Hinv1), slices, targets, slice(i1, i2))
            Q1, Err1 = obs_block(W1, Hinv1, SEGMENT, lambda j0, j1, _: mask1[:, j0:j1])
        elif (i2 - i1) % m == 0 and math.comb(m, n) <= MAX_NM_PATTERNS:
            Q1, Err1 = nm_block(W1, Hinv1, n, m)
        else:
            def nm_mask(j0, j1, W_seg):
                score = _block_scores(W_seg, Hinv1[j0:j1, j0:j1])
                mask = torch.zeros_like(score, dtype=torch.bool)
                return mask.scatter_(1, torch.topk(score, n, dim=1, largest=False)[1], True)
            Q1, Err1 = obs_block(W1, Hinv1, m, nm_mask)
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ hinv[i1:i2, i2:]
    return W


@register("score", "sparsegpt", SparseGPTConfig)
class SparseGPT(Scorer):
    updates_weights = True               # OBS update of the kept weights (stored by repro/store.py)
    needs_calibration = True
    stats = frozenset({"hessian"})

    @classmethod
    def check(cls, run) -> None:
        if run.pattern.name == "nm":
            _check_blocksize(run.score.blocksize, run.pattern.n, run.pattern.m)

    def _factor(self, stats: LayerStats):
        key = ("sparsegpt_inverse_hessian", self.cfg.percdamp)
        return stats.derived(key, lambda st: inverse_hessian_factor(st["hessian"], self.cfg.percdamp))

    @torch.no_grad()
    def prune_layer(self, name: str, linear: nn.Linear, stats: LayerStats, target: Target, pattern) -> None:
        self.prune_group([(name, linear, stats, target)], pattern)

    @torch.no_grad()
    def prune_group(self, items: List[tuple], pattern) -> None:
        """items: (full name, linear, stats, target). Linears sharing one `LayerStats` are pruned together."""
        by_stats: Dict[int, list] = {}
        for item in items:
            by_stats.setdefault(id(item[2]), []).append(item)
        n, m = (pattern.n, pattern.m) if pattern is not None and pattern.name == "nm" else (0, 0)
        for group in by_stats.values():
            names = [g[0] for g in group]
            try:
                hinv, dead = self._factor(group[0][2])
            except torch.linalg.LinAlgError as e:
                raise FloatingPointError(f"SparseGPT on {', '.join(names)}: {e}") from None
            weights = [g[1].weight.data for g in group]
            W = torch.cat([w.to(torch.float32) for w in weights]) if len(weights) > 1 else weights[0].float()
            bounds = torch.tensor([0] + [w.shape[0] for w in weights]).cumsum(0).tolist()
            slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
            W = sparsegpt_prune(W, hinv.to(W.device), dead.to(W.device), slices, [g[3] for g in group],
                                n, m, self.cfg.blocksize)
            for w, sl in zip(weights, slices):
                w.copy_(W[sl])
            log.debug("sparsegpt pruned %s", names)
