"""MOSP (Chen, Yang, Gou, Shi, Hu, Li & Kwok, "Multi-Objective One-Shot Pruning for Large Language Models",
NeurIPS 2025): a shared core support, per-task supports, and any preference's model assembled without data.

No public code: reconstructed from the paper's equations as a third-party summary gives them, on ALPS
(`repro/methods/alps.py`, `_admm.py`); research note shared/research/lua_mosp.md §2, every unknown it flags is an
option below or in `objectives` (conf/score/mosp.yaml, conf/objectives/), recorded in each run. Runs only as a
multi-objective run (`repro/methods/mosp_grid.py`): `python -m repro.cli run env=offline score=mosp sparsity=0.5`.

Per linear Ŵ [d_out, d_in], with per-domain Hessians H_i (one calibration pass, `LayerStats.parts`) and
H = Σ_i H_i (`objectives.task_hessian`: each H_i averaged over its own sequences, or summed over its tokens):
- stage 1, "dual ADMM" on H (ALPS's ridge, normalisation, eigendecomposition, ρ schedule, restarts, stopping):
  the shared sequence (B, D, V) with D = P_k(·) and, on the same (A + ρI)⁻¹ and ρ, the core sequence (B_c, D_c,
  V_c) with D_c = P_{αk | supp(D)}(·) (`_admm.admm_support(core_pat=…)`). Outputs the shared W = P_{k,S_c}(B)
  (+ ALPS's CG on its support, `refine_shared`) and the core S_c = supp(D_c), |S_c| = αk;
- stage 2, per task i: ALPS's ridge and normalisation of H_i with γ_i (`gamma_rule`: "trace_over_d" γ = 0.01·
  Tr(H_i)/d_in — ALPS's ridge, the note's reading — or "trace" γ = 0.01·Tr(H_i)), so the objective is
  ‖X_iŴ − X_iW‖² + γ‖Ŵ − W‖²; ρ = 0.5 fixed, one Cholesky factor, ≤ 10 ADMM steps from D = the shared W, V = 0,
  D_i = P_{k,S_c}(·) (S_c plus the top k − |S_c| outside it);
- stage 3, per task: ALPS's masked batched CG, 10 steps, on supp(D_i) from X0 = D_i, on the task's problem;
- assembly of a preference λ: λ' = map(λ) (`mapping`: power λ^{1/p}/Σ (the note's reading), softmax(λ/p), or
  none; p = `temperature` = 0.5), W_λ = P_{k,S_c}(W + Σ_i λ'_i (W_i − W)), the projection ranking |w_ij|·x_j with
  the stage-1 column norms x (`assembly_score: normalized`, ALPS's own ranking) or |w_ij| (`magnitude`).
  With a one-hot λ this returns W_i exactly (W_i is k-sparse and holds S_c).
N:M: every projection keeps its count per group of M inputs (k = M − N, core α(M − N) per group; α(M − N) must be
an integer). Stored once per run (W, W_i, S_c, x per linear; `repro/methods/mosp_store.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from repro.config import ConfigError, check_choice, check_range
from repro.methods._admm import (AdmmSchedule, Pattern, admm_fixed_rho, admm_support, cg_batch,
                                 cholesky_inverse, project_with_core, ridge_normalize)
from repro.methods.alps import Normalized
from repro.methods.base import MethodConfig, Scorer
from repro.registry import register


@dataclass
class MOSPConfig(MethodConfig):
    name: str = "mosp"
    alpha: float = 0.5                   # |S_c| = α·k
    rho: float = 0.1                     # stage 1: ALPS's ρ₀ and schedule
    max_iter: int = 300
    update_iter: int = 3
    switch_iter: int = 30
    ridge: float = 0.01                  # stage 1: ALPS's ridge on H
    refine_shared: bool = True           # CG on the shared W's support (unknown in the paper; harmless)
    stage2_rho: float = 0.5
    stage2_iters: int = 10
    gamma: float = 0.01
    gamma_rule: str = "trace_over_d"     # γ = gamma·Tr(H_i)/d_in (ALPS's ridge) | gamma·Tr(H_i)
    cg_iters: int = 10                   # stage 3 (and the shared refinement)
    cg_rtol: float = 1e-4
    mapping: str = "power"               # λ → λ': power (λ^{1/p}, normalised) | softmax (of λ/p) | none
    temperature: float = 0.5             # p
    assembly_score: str = "normalized"   # rank |w|·x (stage-1 column norms) | |w| in P_{k,S_c} at assembly

    def __post_init__(self):
        check_range("score.alpha", self.alpha, lo=0.0, hi=1.0)
        check_range("score.rho", self.rho, lo=0.0, lo_open=True)
        check_range("score.stage2_rho", self.stage2_rho, lo=0.0, lo_open=True)
        check_range("score.temperature", self.temperature, lo=0.0, lo_open=True)
        for name in ("max_iter", "update_iter"):
            check_range(f"score.{name}", getattr(self, name), lo=1)
        for name in ("switch_iter", "stage2_iters", "cg_iters"):
            check_range(f"score.{name}", getattr(self, name), lo=0)
        check_range("score.gamma", self.gamma, lo=0.0)
        check_range("score.ridge", self.ridge, lo=0.0)
        check_choice("score.gamma_rule", self.gamma_rule, ("trace_over_d", "trace"))
        check_choice("score.mapping", self.mapping, ("power", "softmax", "none"))
        check_choice("score.assembly_score", self.assembly_score, ("normalized", "magnitude"))

    @property
    def schedule(self) -> AdmmSchedule:
        return AdmmSchedule(self.rho, self.max_iter, self.update_iter, self.switch_iter)


def map_preference(lam, mapping: str, p: float) -> torch.Tensor:
    """λ → λ' (sums to 1)."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    if mapping == "power":
        w = lam ** (1.0 / p)
    elif mapping == "softmax":
        w = torch.exp(lam / p)
    else:
        w = lam.clone()
    return w / w.sum()


def core_pattern(pat: Pattern, alpha: float) -> Pattern:
    """|S_c| = α·k: round(α·k) of the matrix, or α·(M − N) per group of M (an integer, checked before loading)."""
    return Pattern(keep=int(round(alpha * pat.keep)), m=pat.m)


def task_hessians(stats, mode: str) -> List[torch.Tensor]:
    """H_i per domain: averaged over the domain's own sequences (per_task) or summed over its tokens (total)."""
    parts = stats.parts
    if mode == "per_task":
        return [p["hessian"] for p in parts]
    return [p["hessian"] * p.nseq for p in parts]


@dataclass
class LayerSolution:
    """What MOSP stores for one linear: everything a preference's model is assembled from."""
    shared: torch.Tensor         # W [d_out, d_in] fp32, k-sparse
    tasks: List[torch.Tensor]    # W_i, k-sparse, S_c ⊆ supp
    core: torch.Tensor           # S_c, bool [d_out, d_in]
    x: torch.Tensor              # stage-1 column norms [d_in] (the assembly's ranking)
    report: dict


@torch.no_grad()
def solve_layer(W: torch.Tensor, H: torch.Tensor, H_tasks: List[torch.Tensor], pat: Pattern,
                cfg: MOSPConfig, shared_prob: Normalized = None, task_probs: List[Normalized] = None
                ) -> LayerSolution:
    """Stages 1-3 for one weight matrix (problems may be passed in, shared by linears reading one input)."""
    W = W.to(torch.float32)
    prob = shared_prob or Normalized.of(H, cfg.ridge)
    cpat = core_pattern(pat, cfg.alpha)
    B0, rhs = prob.target(W)
    res = admm_support(prob.A, prob.eig, rhs, B0, pat, cfg.schedule, core_pat=cpat)
    core = res.core != 0
    B = project_with_core(res.last, pat, core)       # P_{k,S_c} of the last iterate (= ALPS's P_k when S_c ⊆ it)
    if cfg.refine_shared and cfg.cg_iters:
        B = cg_batch(prob.A, rhs, B != 0, B, rtol=cfg.cg_rtol, maxiter=cfg.cg_iters)
    shared = prob.unscale(B)
    tasks = []
    for i, Hi in enumerate(H_tasks):
        A_i, x_i, inv_i = task_probs[i] if task_probs else task_problem(Hi, cfg)
        Wx = W * x_i
        rhs_i = (Wx @ A_i).T
        _, D = admm_fixed_rho(inv_i, rhs_i, (shared * x_i).t(), lambda Z: project_with_core(Z, pat, core),
                              cfg.stage2_rho, cfg.stage2_iters)
        if cfg.cg_iters:
            D = cg_batch(A_i, rhs_i, D != 0, D, rtol=cfg.cg_rtol, maxiter=cfg.cg_iters)
        tasks.append(D.t() / x_i)
    report = {"iterations": res.iterations, "rho": res.rho, "restarts": res.restarts, "core": int(core.sum()),
              "core_outside_pk": int((core & (res.B == 0)).sum())}      # S_c not inside ALPS's P_k(B)
    return LayerSolution(shared, tasks, core.t().contiguous(), prob.x, report)


def task_problem(H_i: torch.Tensor, cfg: MOSPConfig):
    """(A_i, x_i, (A_i + ρI)⁻¹) of stage 2: ALPS's ridge with γ_i, its column normalisation, one Cholesky."""
    ridge = cfg.gamma if cfg.gamma_rule == "trace_over_d" else cfg.gamma * H_i.shape[0]
    A, x = ridge_normalize(H_i, ridge)
    return A, x, cholesky_inverse(A, cfg.stage2_rho)


def assemble(shared: torch.Tensor, tasks: List[torch.Tensor], core: torch.Tensor, x: torch.Tensor,
             mapped: torch.Tensor, pat: Pattern, score: str = "normalized") -> torch.Tensor:
    """W_λ = P_{k,S_c}(W + Σ λ'_i (W_i − W)), no data, no optimisation ([d_out, d_in], fp32).

    Σ λ'_i = 1, so the combination is Σ λ'_i W_i: computed that way, a one-hot λ' gives W_i bit for bit (the
    literal W + (W_i − W) can differ from W_i by one rounding)."""
    Z = torch.zeros_like(shared)
    for w, Wi in zip(mapped.tolist(), tasks):
        if w:
            Z += w * Wi
    scale = x if score == "normalized" else torch.ones_like(x)
    keep = project_with_core((Z * scale).t(), pat, core.t()).t() != 0
    return torch.where(keep | core, Z, torch.zeros_like(Z))


def check_run(run) -> None:
    """MOSP's preflight: a multi-objective run, layer-wise budget, the core fits the budget."""
    if run.objectives is None:
        raise ConfigError("objectives", None, "a multi-objective setting (e.g. objectives=c4_gsm8k)",
                          "MOSP prunes for several domains at once: see conf/objectives/.")
    cfg = run.score
    if run.pattern.name == "nm":
        keep = run.pattern.m - run.pattern.n
        if abs(cfg.alpha * keep - round(cfg.alpha * keep)) > 1e-9:
            raise ConfigError("score.alpha", cfg.alpha, f"a multiple of 1/{keep}: the core keeps α·(M − N) "
                              f"weights per group of the {run.pattern.label} pattern")
    elif cfg.alpha > 0:
        smallest = _smallest_linear(run.model)
        if smallest is not None:
            k = int(round((1 - run.sparsity) * smallest))
            if int(round(cfg.alpha * k)) < 1:
                raise ConfigError("sparsity", run.sparsity, f"a budget k with α·k >= 1 (smallest linear: "
                                  f"{smallest} weights, k = {k}, α = {cfg.alpha})", "k is too small for S_c.")


def _smallest_linear(model_cfg):
    """Weights of the model's smallest decoder linear (k/v), when its config is known before loading."""
    from repro.models.loading import known_config

    c = known_config(model_cfg)
    if not c or "hidden_size" not in c:
        return None
    h = c["hidden_size"]
    heads = c.get("num_attention_heads") or 1
    kv = c.get("num_key_value_heads") or heads
    return h * (c.get("head_dim") or h // heads) * kv


@register("score", "mosp", MOSPConfig)
class MOSP(Scorer):
    needs_calibration = True
    stats = frozenset({"hessian"})

    @classmethod
    def check(cls, run) -> None:
        check_run(run)

    def prune_layer(self, name, linear, stats, target, pattern) -> None:
        raise RuntimeError("MOSP runs as a multi-objective run only (repro/methods/mosp_grid.py)")
