"""MOSP and the multi-objective runs: projections, stages, assembly, Extension 1, hypervolume, bad input."""
import dataclasses
import json

import pytest
import torch

from repro.config import ConfigError
from repro.methods._admm import EigenInverse, Pattern, admm_support, project_inside, ridge_normalize
from repro.methods._pareto import hypervolume, pareto_front, preference_grid
from repro.methods.alps import Normalized
from repro.methods.mosp import MOSPConfig, assemble, core_pattern, map_preference, solve_layer
from repro.run import preflight
from tests.conftest import compose_run

OFFLINE = ("env=offline", "model=tiny-llama", "model.seqlen=128", "calib.nsamples=4", "eval.ppl.max_windows=2")


def _problem(d_in=32, d_out=24, tasks=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g)
    Hs = []
    for t in range(tasks):
        X = torch.randn(256, d_in, generator=g) * (torch.rand(d_in, generator=g) * 3 + 0.1)
        Hs.append(2 / 4 * X.T @ X)
    return W, Hs


@pytest.mark.parametrize("pat", [Pattern(keep=300), Pattern(keep=2, m=4)])
def test_core_projection_stays_inside_the_support_with_the_right_count(pat):
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(32, 24, generator=g)
    support = torch.rand(32, 24, generator=g) < 0.6
    if pat.nm:                                              # N:M: every group of 4 inputs holds 2 support entries
        support = torch.zeros(24, 8, 4, dtype=torch.bool).scatter_(2, torch.rand(24, 8, 4, generator=g)
                                                                   .argsort(-1)[..., :2], True).reshape(24, 32).t()
    cpat = core_pattern(pat, 0.5)
    out = project_inside(Z, cpat, support)
    nz = out != 0
    assert not (nz & ~support).any()
    if pat.nm:
        assert (nz.t().reshape(-1, 4).sum(1) == 1).all()
    else:
        assert int(nz.sum()) == 150
        chosen = Z.abs()[nz].min()
        assert (Z.abs()[support & ~nz] <= chosen).all()    # the largest inside S


@pytest.mark.parametrize("pat", [Pattern(keep=384), Pattern(keep=2, m=4)])
def test_stages_core_inside_every_support_and_budgets_met(pat):
    W, Hs = _problem()
    sol = solve_layer(W, sum(Hs), Hs, pat, MOSPConfig())
    core = sol.core
    assert int(core.sum()) == (192 if not pat.nm else 24 * 8)
    for Wm in [sol.shared] + sol.tasks:
        assert not (core & (Wm == 0)).any()                     # S_c ⊆ supp(W), supp(W_i)
        if pat.nm:
            assert ((Wm != 0).reshape(-1, 4).sum(1) <= 2).all()
        else:
            assert int((Wm != 0).sum()) == 384
    assert not torch.equal(sol.tasks[0] != 0, sol.tasks[1] != 0)   # the task supports differ outside S_c


def test_dual_admm_core_is_inside_the_shared_support():
    W, Hs = _problem(seed=2)
    A, x = ridge_normalize(sum(Hs))
    B0 = (W * x).t().clone()
    res = admm_support(A, EigenInverse.of(A), (W * x @ A).T, B0, Pattern(keep=400), core_pat=Pattern(keep=200))
    assert int((res.core != 0).sum()) == 200
    assert not ((res.core != 0) & (res.D == 0)).any()


def test_task_weights_fit_their_own_task_better():
    W, Hs = _problem(seed=3)
    sol = solve_layer(W, sum(Hs), Hs, Pattern(keep=384), MOSPConfig())

    def err(Wp, H):
        return float(torch.trace((Wp - W) @ H @ (Wp - W).T))
    for i, H in enumerate(Hs):
        assert err(sol.tasks[i], H) < err(sol.tasks[1 - i], H)
        assert err(sol.tasks[i], H) < err(sol.shared, H)


def test_one_hot_assembly_returns_the_task_model_exactly():
    W, Hs = _problem(seed=4)
    pat = Pattern(keep=384)
    sol = solve_layer(W, sum(Hs), Hs, pat, MOSPConfig())
    for i in range(2):
        lam = map_preference([1.0 if j == i else 0.0 for j in range(2)], "power", 0.5)
        assert torch.equal(assemble(sol.shared, sol.tasks, sol.core, sol.x, lam, pat), sol.tasks[i])
    mid = assemble(sol.shared, sol.tasks, sol.core, sol.x, map_preference([0.5, 0.5], "power", 0.5), pat)
    assert int((mid != 0).sum()) == 384 and not (sol.core & (mid == 0)).any()


def test_preference_map():
    torch.testing.assert_close(map_preference([0.25, 0.75], "power", 0.5),
                               torch.tensor([0.1, 0.9], dtype=torch.float64))       # λ² normalised
    assert map_preference([0.3, 0.7], "none", 0.5).tolist() == pytest.approx([0.3, 0.7])
    assert map_preference([0.0, 1.0], "softmax", 0.5)[1] < 1


def test_hypervolume_and_front_of_a_hand_made_set():
    F = [[1, 3], [2, 2], [3, 1], [3, 3]]
    assert pareto_front(F) == [0, 1, 2]
    assert hypervolume(F, [4, 4]) == pytest.approx(3 * 1 + 2 * 1 + 1 * 1)     # the staircase's area
    assert hypervolume([[5, 1]], [4, 4]) == 0.0                               # beyond the reference: nothing
    assert hypervolume([[1, 1, 1]], [2, 3, 4]) == pytest.approx(1 * 2 * 3)
    grid = preference_grid(2)
    assert len(grid) == 11 and [0.0, 1.0] in grid and [1.0, 0.0] in grid and [0.5, 0.5] in grid
    assert len(preference_grid(3)) == 15 and all(abs(sum(p) - 1) < 1e-9 for p in preference_grid(3))


def _two_domain_engine(model, propagate, sizes=(4, 4), seed=0):
    from repro.models.adapter import adapter_for
    from repro.prune.engine import CalibrationEngine

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 259, (sum(sizes), 32), generator=g)
    cfg = compose_run(*OFFLINE, "score=sparsegpt", f"engine.propagate={propagate}")
    return CalibrationEngine(model, adapter_for(model), cfg.engine, ids, batch_size=2, progress=False,
                             domain_sizes=list(sizes)), ids, cfg


@pytest.mark.parametrize("score", ["sparsegpt", "wanda", "alps"])
def test_extension1_with_a_one_hot_preference_is_the_single_objective_pruner(score):
    """Ext. 1 on H_λ with λ = e_1 (statistics of both domains gathered once) = the pruner on domain 1 alone."""
    import copy

    from repro.methods.mosp_grid import _Pass, extension1_model
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.prune.engine import CalibrationEngine
    from repro.prune.pipeline import ApplyTargets
    from repro.registry import build

    base, _ = load_model(compose_run("model=tiny-llama").model)
    engine, ids, cfg = _two_domain_engine(copy.deepcopy(base), "dense")
    cfg = dataclasses.replace(cfg, score=compose_run(*OFFLINE, f"score={score}").score)
    scorer = build("score", cfg.score)
    adapter = adapter_for(base)
    targets = {n: 0.5 for n in adapter.all_linears(base)}
    cb = _Pass(scorer, dataclasses.replace(cfg, objectives=compose_run(*OFFLINE, "+objectives=c4_gsm8k").objectives),
               targets)
    engine.model = multi = copy.deepcopy(base)
    engine.run(cb)                      # prunes on the pooled statistics (propagate=shared): restore the dense
    for n, lin in adapter.all_linears(multi).items():
        lin.weight.data.copy_(adapter.all_linears(base)[n].weight.data)
    extension1_model(scorer, cb, adapter.all_linears(multi), [1.0, 0.0], targets, cfg.pattern)
    single = copy.deepcopy(base)
    CalibrationEngine(single, adapter, cfg.engine, ids[:4], batch_size=2, progress=False).run(
        ApplyTargets(scorer, targets, cfg.pattern))
    for n, lin in adapter.all_linears(single).items():
        torch.testing.assert_close(adapter.all_linears(multi)[n].weight, lin.weight, atol=1e-6, rtol=1e-5)


def test_one_pass_keeps_one_hessian_per_domain(tiny_llama):
    from repro.prune.engine import BlockCallback

    model, _ = tiny_llama

    class Grab(BlockCallback):
        stats = frozenset({"hessian"})

        def __init__(self):
            self.st = None

        def on_group(self, ctx):
            if ctx.index == 0:
                self.st = ctx.stats["self_attn.q_proj"]

    engine, ids, _ = _two_domain_engine(model, "dense", sizes=(4, 2))
    both = Grab()
    engine.run(both)
    for d, part in enumerate((ids[:4], ids[4:])):
        engine.input_ids, engine.domain_sizes, engine.ndomains = part, None, 0
        one = Grab()
        engine.run(one)
        torch.testing.assert_close(both.st.parts[d]["hessian"], one.st["hessian"])
    H1, H2 = (p["hessian"] for p in both.st.parts)
    torch.testing.assert_close(both.st["hessian"], (4 * H1 + 2 * H2) / 6)     # pooled over all sequences
    assert not torch.allclose(H1, H2)


def test_mosp_run_stores_once_and_assembles_without_data(tmp_path):
    from repro.methods.mosp_store import MospStore
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.run import execute

    rec = execute(compose_run(*OFFLINE, "score=mosp", f"paths.results={tmp_path}"))
    assert rec["status"] == "ok"
    p = rec["metrics"]["pareto"]
    assert p["domains"] == ["c4", "gsm8k"] and len(p["preferences"]) == 5 and len(p["ppl"][0]) == 2
    assert all(abs(s - 0.5) < 1e-3 for s in p["sparsity"])
    assert "ppl" not in rec["metrics"]        # many models: never a single-objective table cell
    assert rec["config"]["score"]["mapping"] == "power" and rec["config"]["objectives"]["propagate"] == "shared"
    store = MospStore(tmp_path / "runs" / rec["identity"] / "mosp")
    assert json.loads((store.path / "manifest.json").read_text())["domains"] == ["c4", "gsm8k"]
    model, _ = load_model(compose_run("model=tiny-llama").model)
    adapter = adapter_for(model)
    kept = store.apply(model, adapter, [0.0, 1.0])
    layers = {n: (W, tasks) for n, W, tasks, _, _ in store.layers()}
    for n, lin in adapter.all_linears(model).items():
        assert torch.equal(lin.weight.data, layers[n][1][1])    # one-hot: that task's weights, from disk
        assert kept[n] == lin.weight.numel() // 2
    from repro.methods.mosp_store import assemble_main
    assemble_main([str(store.path.parent), "--preference", "0.3,0.7", "--out", str(tmp_path / "m")])
    assert (tmp_path / "m" / "config.json").is_file()
    with pytest.raises(ConfigError, match="--preference"):
        assemble_main([str(store.path.parent), "--preference", "0.3,0.6", "--out", str(tmp_path / "m2")])
    with pytest.raises(ConfigError, match="--preference"):
        assemble_main([str(store.path.parent), "--preference", "0.3,x", "--out", str(tmp_path / "m2")])
    with pytest.raises(ConfigError, match="run_dir"):                       # no store there (or unfinished)
        assemble_main([str(tmp_path), "--preference", "0.3,0.7", "--out", str(tmp_path / "m2")])
    for bad in ([1.2, -0.2], [0.5, 0.5, 0.0], [0.4, 0.4]):
        with pytest.raises(ConfigError, match="preference"):
            store.apply(model, adapter, bad)


def test_bad_input_fails_before_loading(tmp_path):
    with pytest.raises(ConfigError, match=r"objectives.preferences\[0\]"):
        compose_run(*OFFLINE, "score=mosp", "objectives.preferences=[[0.5,0.4]]")
    with pytest.raises(ConfigError, match=r"objectives.preferences\[1\]"):
        compose_run(*OFFLINE, "score=mosp", "objectives.preferences=[[0.5,0.5],[1.5,-0.5]]")
    with pytest.raises(ConfigError, match="score.alpha"):
        compose_run(*OFFLINE, "score=mosp", "score.alpha=1.5")
    with pytest.raises(ConfigError, match="objectives.domains"):
        compose_run(*OFFLINE, "score=mosp", "objectives.domains=[{name: c4}, {name: arxiv}]")
    with pytest.raises(ConfigError, match="test_local_path"):       # no stand-in, no local file: no test data
        preflight(compose_run(*OFFLINE, "score=mosp", "objectives.domains=[{name: c4}, {name: code_alpaca}]"))
    tiny = tmp_path / "gsm8k-test.jsonl"          # test data shorter than one evaluation window: no perplexity
    tiny.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    with pytest.raises(ConfigError, match=r"objectives.domains\[1\].test_local_path.*one window \(128 tokens\)"):
        preflight(compose_run(*OFFLINE, "score=mosp", f"objectives.domains.1.test_local_path={tiny}"))
    with pytest.raises(ConfigError, match="too small for S_c"):
        preflight(compose_run(*OFFLINE, "score=mosp", "sparsity=0.9999"))
    ckpt = tmp_path / "ckpt"                  # a local checkpoint: its config.json alone tells the budget
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
                                                  "num_key_value_heads": 2, "head_dim": 8}))
    local = ("env=offline", "model=smollm2-135m", f"model.path={ckpt}", "model.gguf_file=null", "score=mosp")
    with pytest.raises(ConfigError, match=r"smallest linear: 1024 weights, k = 1"):
        preflight(compose_run(*local, "sparsity=0.999"))
    preflight(compose_run(*local, "sparsity=0.99"))                  # k = 10, α·k = 5: fine
    with pytest.raises(ConfigError, match="score.alpha"):
        preflight(compose_run(*OFFLINE, "score=mosp", "pattern=nm_2_4", "score.alpha=0.25"))
    with pytest.raises(ConfigError, match="objectives"):
        preflight(compose_run(*OFFLINE, "score=mosp", "~objectives"))
    with pytest.raises(ConfigError, match="score.name"):
        preflight(compose_run(*OFFLINE, "score=dsnot", "+objectives=c4_gsm8k"))


def _mo_record(score, ppl, model="llama2-7b", sparsity=0.5):
    return {"identity": f"{score}-{model}", "status": "ok", "run_dir": f"/r/{score}", "finished_at": "x",
            "config": {"model": {"name": model, "seqlen": None}, "score": {"name": score},
                       "allocation": {"name": "uniform"}, "recovery": {"name": "none"},
                       "pattern": {"name": "unstructured", "n": 0, "m": 0}, "sparsity": sparsity, "seed": 0,
                       "calib": {"nsamples": 128, "seqlen": None, "seed": 0},
                       "eval": {"ppl": {"seqlen": None, "max_windows": None}},
                       "objectives": {"domains": [{"name": "c4"}, {"name": "gsm8k"}], "standins": False,
                                      "hv_factor": 1.1}},
            "metrics": {"pareto": {"domains": ["c4", "gsm8k"], "preferences": [[1, 0], [0, 1]], "ppl": ppl}},
            "timings": {"prune_s": 3600.0}, "memory": {"peak_rss_gib": 1.0}}


def test_collector_hypervolume_uses_the_sparsegpt_reference():
    from repro.collect import build_paper, paper_markdown

    recs = [_mo_record("sparsegpt", [[10, 20], [15, 12]]), _mo_record("mosp", [[9, 18], [14, 11]])]
    res = build_paper("mosp", recs)
    ref = [16.5, 22.0]                                           # 1.1 × SparseGPT's worst per domain
    cell = res.tables["hv_two"].cell("MOSP", "llama2-7b / 50%")
    assert cell.mean == pytest.approx(hypervolume([[9, 18], [14, 11]], ref))
    assert cell.mean == pytest.approx((16.5 - 9) * (22 - 18) + (16.5 - 14) * (18 - 11))
    assert res.tables["hv_two"].cell("SparseGPT (Ext. 1)", "llama2-7b / 50%").mean == pytest.approx(
        hypervolume([[10, 20], [15, 12]], ref))
    md = paper_markdown(res)
    assert "Pareto fronts" in md and "16.50/22.00" in md
    from repro.collect.render.pareto import figures
    assert len(figures(res.fronts)) == 1


def test_domain_sources_and_stand_ins():
    from repro.config import CalibConfig, DomainConfig
    from repro.data.domains import calib_config, test_source
    from repro.data.sources import HUB, load_rows

    gsm = DomainConfig("gsm8k")
    cal = calib_config(gsm, CalibConfig(nsamples=4), standins=True)
    assert cal.name == "gsm8k" and cal.local_path.endswith("gsm8k-standin-train.jsonl")
    name, src = test_source(gsm, standins=True)
    rows = load_rows("gsm8k_test", src.local_path)
    assert name == "gsm8k" and "\n#### " in rows[0] and rows[0].split("\n")[0].endswith("?")   # question\nanswer
    assert calib_config(DomainConfig("c4"), CalibConfig(), standins=True).name == "local_text"
    assert test_source(DomainConfig("c4"), standins=False)[0] == "c4"
    assert calib_config(gsm, CalibConfig(), standins=False).local_path is None          # the hub
    assert (HUB["gsm8k_test"].path, HUB["gsm8k_test"].name, HUB["gsm8k_test"].split) == ("openai/gsm8k", "main", "test")
    assert HUB["code_test"].split == "train[90%:]" and HUB["code_train"].split == "train[:90%]"
