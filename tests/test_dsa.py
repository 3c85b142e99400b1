"""DSA (repro/allocation/dsa.py) against the reference's own code (tests/golden/dsa_reference.json, written by
tools/golden/dsa_reference.py from lliai/DSA a5ebe65), plus the invariants and the bad-input errors."""
import copy
import json
from pathlib import Path

import pytest
import torch

from repro.allocation.dsa import dsa_sparsities, importance, parse_graph
from repro.config import ConfigError
from repro.methods.base import AllocationContext
from repro.models.adapter import adapter_for
from repro.registry import build
from tests.conftest import compose_run

GOLDEN = json.loads((Path(__file__).parent / "golden" / "dsa_reference.json").read_text())
FAST = ("model=tiny-llama", "calib.name=local_text", "calib.nsamples=4", "calib.batch_size=4", "model.seqlen=32")


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"{c['graph']}-{c['sparsity']}")
def test_matches_reference_code(case):
    blocks = [torch.tensor(b, dtype=torch.float32) for b in GOLDEN["blocks"]]
    graph = parse_graph(case["graph"])
    imps = [importance(b.clone(), graph) for b in blocks]
    assert imps == pytest.approx(case["importance"], rel=1e-5, abs=1e-6)
    ours = dsa_sparsities(case["importance"], case["sparsity"], case["lam"])
    assert ours == pytest.approx(case["block_sparsity"], abs=1e-9)


def test_readme_graph_hits_the_nan_rule():
    """asin(atan(var)) is NaN once var > tan(1): the reference scores such a block 0 (and so do we)."""
    case = next(c for c in GOLDEN["cases"] if c["graph"] == "W:(ABSLOG)-(VAR)-(ATAN,ASIN)-(7)")
    assert 0.0 in case["importance"]


@pytest.mark.parametrize("s", [0.5, 0.7, 0.8])
def test_invariants(s):
    imps = [0.3, 1.2, -0.4, 0.9, 0.0, 2.5]
    out = dsa_sparsities(imps, s, 0.08)
    assert sum(out) / len(out) == pytest.approx(s, abs=1e-9)
    assert all(0 <= x < 1 for x in out)
    assert max(out) - min(out) == pytest.approx(0.16)
    # the released code: higher importance -> higher sparsity (monotone)
    order = sorted(range(len(imps)), key=imps.__getitem__)
    assert [out[i] for i in order] == sorted(out)


def test_constant_importance_is_uniform():
    assert dsa_sparsities([0.0, 0.0, 0.0], 0.7, 0.08) == [0.7, 0.7, 0.7]


@pytest.mark.parametrize("graph,needle", [("W:(ABS)-(GRAM)-(SIN)", "needs a matrix"), ("W:(FOO)-(VAR)-(SIN)", "FOO"),
                                          ("ABS-VAR", "graph string")])
def test_bad_graph_is_a_config_error(graph, needle):
    with pytest.raises(ConfigError, match="allocation.graph") as e:
        compose_run(*FAST, "allocation=dsa", f"allocation.graph='{graph}'")
    assert needle in str(e.value)


def test_on_tiny_llama_mean_and_range(tiny_llama):
    model, _ = tiny_llama
    run = compose_run(*FAST, "allocation=dsa", "score=wanda", "sparsity=0.7", "allocation.graph='W:(ABS)-(MEAN)-(NO_OP)'")
    m = copy.deepcopy(model)
    report = {}
    ids = torch.randint(3, 259, (4, 32), generator=torch.Generator().manual_seed(0))
    targets = build("allocation", run.allocation).allocate(
        AllocationContext(m, adapter_for(m), run, build("score", run.score), ids, report))
    per_block = report["block_sparsity"]
    assert sum(per_block) / len(per_block) == pytest.approx(0.7, abs=1e-6)
    assert set(targets) == set(adapter_for(m).all_linears(m))


def test_range_leaving_0_1_raises(tiny_llama):
    """s + λ >= 1: a block would be fully pruned; clear error naming allocation.lam instead of a silent clamp."""
    model, _ = tiny_llama
    run = compose_run(*FAST, "allocation=dsa", "score=wanda", "sparsity=0.95", "allocation.lam=0.2",
                      "allocation.graph='W:(ABS)-(MEAN)-(NO_OP)'")
    m = copy.deepcopy(model)
    ids = torch.randint(3, 259, (4, 32), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=r"allocation.lam.*outside \[0, 1\)"):
        build("allocation", run.allocation).allocate(
            AllocationContext(m, adapter_for(m), run, build("score", run.score), ids, {}))


@pytest.mark.parametrize("score,extra", [("magnitude", ("score.granularity=row",)), ("sparsegpt", ()), ("dsnot", ())])
def test_composes_with_other_scores(tiny_llama, score, extra):
    from repro.prune.pipeline import measure_sparsity, prune_model

    model, _ = tiny_llama
    run = compose_run(*FAST, "allocation=dsa", f"score={score}", *extra, "sparsity=0.7",
                      "allocation.graph='W:(ABS)-(STD)-(NO_OP)'")
    m = copy.deepcopy(model)
    ids = torch.randint(3, 259, (4, 32), generator=torch.Generator().manual_seed(0))
    report = prune_model(m, adapter_for(m), run, ids)
    assert report["allocation"] == "dsa"
    assert measure_sparsity(m, adapter_for(m))["overall"] == pytest.approx(0.7, abs=0.03)
