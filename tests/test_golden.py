"""The engine against golden fixtures produced by the ORIGINAL reference code (tools/golden/, tests/golden/).

The fixtures were made outside CI by `tools/golden/make_fixtures.sh` (pinned reference environment, reference
repositories at the commits recorded in each fixture, their code unmodified). Here we only compare: the same dense
weights (checked by digest), the same calibration and evaluation tokens (stored in the fixture), the project's
engine with the reference-matching settings (`calib.batch_size=1`: the references forward one sequence at a
time) against the reference's per-module zero counts (exact), masks (exact; the first 16 rows of SmolLM2's large
modules), per-block / per-layer ratios (1e-6), NeuronAL's chosen λ (exact) and λ objectives (1e-3 relative), and
perplexity (0.5 %). Masks may differ only where the reference disagrees with itself between 1 and 2 threads
(`ref_thread_noise`, stored in the fixture: SparseGPT 50 % on SmolLM2's down_proj, where one fp32 near-tie flips
and the OBS update cascades it along the row), and then by at most twice that.

Covered: locuslab/wanda (magnitude, Wanda, SparseGPT; unstructured and 2:4; LLaMA and OPT), IST-DASLab/sparsegpt
(OPT, unstructured and 2:4), luuyin/OWL (Wanda, magnitude, SparseGPT), zyxxmu/DSnoT (Wanda init, 50 %),
haiquanlu/AlphaPruning (alpha_peak, block-wise; Wanda 70 %, magnitude 50 %), eliacunegatti/NeuroAL (block step,
Wanda 70 %). Not covered (the reference cannot run here): NeuroAL's row step (a compiled CUDA op), IST llama.py
(calls the decoder layer without position_ids, which the pinned transformers 4.46 requires; not attempted); the
DSnoT reference crashes at 70 % on 64-wide layers (gather index -1) and AlphaPruning's magnitude at 70 % with
ε = 0.3 (a layer ratio > 1).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN = Path(__file__).resolve().parent / "golden"

# The golden models (config overrides of this project). `truncate`: keep only the first blocks of a real model.
MODELS = {
    "tiny-llama": {"overrides": ["model=tiny-llama"], "family": "llama", "calib": [16, 128], "eval": [8, 128]},
    "tiny-llama-4l": {"overrides": ["model=tiny-llama", "model.random_init.num_hidden_layers=4"],
                      "family": "llama", "calib": [16, 128], "eval": [8, 128]},
    "tiny-opt": {"overrides": ["model=tiny-opt"], "family": "opt", "calib": [16, 128], "eval": [8, 128]},
    "tiny-opt-4l": {"overrides": ["model=tiny-opt", "model.random_init.num_hidden_layers=4"],
                    "family": "opt", "calib": [16, 128], "eval": [8, 128]},
    "smollm2-1block": {"overrides": ["model=smollm2-135m"], "family": "llama", "truncate": 1,
                       "calib": [16, 256], "eval": [4, 256]},
}


def build_model(spec: dict):
    """The dense golden model through the project's loader (and adapter)."""
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from tests.conftest import compose_run

    model, tok = load_model(compose_run(*spec["overrides"]).model)
    n = spec.get("truncate")
    if n:
        adapter = adapter_for(model)
        blocks = adapter.blocks(model)
        del blocks[n:]
        model.config.num_hidden_layers = n
        if isinstance(getattr(model.config, "layer_types", None), list):
            model.config.layer_types = model.config.layer_types[:n]
    return model, tok


def weights_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def golden_tokens(spec: dict):
    """Calibration and evaluation token ids: random bytes for the tiny models, the bundled WikiText-2 slices
    (project tokenizer) for SmolLM2. Stored in the fixture; the tests never regenerate them."""
    (nc, lc), (ne, le) = spec["calib"], spec["eval"]
    if spec.get("truncate") is None:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (nc, lc), generator=g), torch.randint(0, 256, (ne, le), generator=g)
    tok = _tokenizer(spec)
    assets = Path(__file__).resolve().parents[1] / "repro" / "assets"
    head = tok((assets / "wikitext2-test-head.txt").read_text(), return_tensors="pt").input_ids[0]
    tail = tok((assets / "wikitext2-test-tail.txt").read_text(), return_tensors="pt").input_ids[0]
    return head[: nc * lc].view(nc, lc), tail[: ne * le].view(ne, le)


def _tokenizer(spec):
    from repro.models.loading import load_model
    from tests.conftest import compose_run
    return load_model(compose_run(*spec["overrides"]).model)[1]


# --------------------------------------------------------------------------------------------------- the tests


def _fixture_names(real: bool):
    """Fixture files of the tiny random models (real=False) or of the truncated real model (real=True); other
    fixtures in tests/golden/ (DSA, ATP, ...) belong to other tests."""
    return [p.stem for p in sorted(GOLDEN.glob("*.json"))
            if p.stem in MODELS and bool(MODELS[p.stem].get("truncate")) == real]


def _cases(real: bool):
    return [pytest.param(name, cid, id=f"{name}-{cid}") for name in _fixture_names(real)
            for cid in json.loads((GOLDEN / f"{name}.json").read_text())["cases"]]


_CACHE: dict = {}


def _dense(name: str):
    if name not in _CACHE:
        fx = json.loads((GOLDEN / f"{name}.json").read_text())
        if MODELS[name].get("truncate"):
            pytest.importorskip("gguf")
        model, _ = build_model(MODELS[name])
        digest = weights_digest(model)
        assert digest == fx["weights_sha256"], (
            f"the project's dense {name} differs from the one the fixture was made with (weights digest "
            f"{digest[:12]} != {fx['weights_sha256'][:12]}): regenerate with tools/golden/make_fixtures.sh")
        _CACHE[name] = (fx, {k: v.clone() for k, v in model.state_dict().items()}, model,
                        np.load(GOLDEN / f"{name}.npz"))
    return _CACHE[name]


@pytest.mark.parametrize("name,cid", _cases(real=False))
def test_engine_matches_reference(name, cid):
    _check_case(name, cid)


@pytest.mark.slow
@pytest.mark.parametrize("name", _fixture_names(real=True))
def test_smollm2_block_matches_reference(name):
    """The first block of SmolLM2 (real weights and text): every golden case, and the dense perplexity, in one
    test (one model load)."""
    _check_dense(name)
    for cid in json.loads((GOLDEN / f"{name}.json").read_text())["cases"]:
        _check_case(name, cid)


def _check_case(name: str, cid: str) -> None:
    from repro.eval.perplexity import perplexity
    from repro.models.adapter import adapter_for
    from repro.prune.pipeline import prune_model
    from tests.conftest import compose_run

    torch.set_num_threads(1)
    fx, dense_state, model, arrays = _dense(name)
    model.load_state_dict(dense_state)
    case = fx["cases"][cid]
    calib = torch.from_numpy(arrays["tokens_calib"].astype(np.int64))
    evals = torch.from_numpy(arrays["tokens_eval"].astype(np.int64))
    run = compose_run(*MODELS[name]["overrides"], *case["ours"], f"sparsity={case['sparsity']}",
                      "calib.batch_size=1", f"calib.nsamples={calib.shape[0]}")
    adapter = adapter_for(model)
    report = prune_model(model, adapter, run, calib)

    linears = adapter.all_linears(model)
    assert sorted(linears) == sorted(case["zeros"]), "module names differ from the reference's"
    zeros = {k: int((v.weight == 0).sum()) for k, v in linears.items()}
    wrong = {k: (zeros[k], case["zeros"][k]) for k in zeros if zeros[k] != case["zeros"][k]}
    assert not wrong, f"zero counts (ours, reference) differ: {wrong}"

    noise = case.get("ref_thread_noise", {}).get("mask_entries", {})
    for k, lin in linears.items():
        rows = case["mask_rows"][k]
        ours = np.packbits((lin.weight == 0)[:rows].numpy().reshape(-1))
        diff = int(np.unpackbits(ours ^ arrays[f"{cid}/{k}"]).sum())
        # Exact, except where the reference disagrees with ITSELF between 1 and 2 threads (fp32 reduction order;
        # SparseGPT's OBS updates let one flipped near-tie cascade along its row): then within twice that.
        allowed = 2 * noise.get(k, 0)
        assert diff <= allowed, (f"{k}: {diff} mask entries differ from the reference (first {rows} rows; the "
                                 f"reference differs from itself by {noise.get(k, 0)} between 1 and 2 threads)")

    if "block_sparsity" in case:
        ours_ratios = report["allocation_report"]["block_sparsity"]
        np.testing.assert_allclose(ours_ratios, case["block_sparsity"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(report["allocation_report"]["outlier_ratios"], case["outlier_ratios"],
                                   rtol=0, atol=1e-6)

    alloc = report["allocation_report"]
    if "layer_sparsity" in case:      # AlphaPruning (per linear), NeuronAL (per block, listed per linear)
        ours_layers = alloc.get("sparsity") or {
            k: alloc["block_sparsity"][int(k.split(".")[-3])] for k in case["layer_sparsity"]}
        np.testing.assert_allclose([ours_layers[k] for k in case["layer_sparsity"]],
                                   list(case["layer_sparsity"].values()), rtol=0, atol=1e-6)
    if "lambda_block" in case:        # NeuronAL: the chosen λ and the objective of every candidate
        assert alloc["lambda_block"] == case["lambda_block"]
        np.testing.assert_allclose(list(alloc["block_objectives"].values()), case["block_objectives"], rtol=1e-3)

    seqlen = evals.shape[1]
    ppl, _ = perplexity(model, evals.reshape(1, -1), seqlen)
    assert ppl == pytest.approx(case["ppl"], rel=5e-3), f"ppl {ppl} vs reference {case['ppl']}"


@pytest.mark.parametrize("name", _fixture_names(real=False))
def test_dense_perplexity_matches_reference(name):
    """Same weights, same tokens: the dense model agrees with the reference environment's (transformers pinned
    there) — catches config drift between transformers versions (e.g. RoPE base) before any pruning comparison."""
    _check_dense(name)


def _check_dense(name: str) -> None:
    from repro.eval.perplexity import perplexity

    fx, dense_state, model, arrays = _dense(name)
    model.load_state_dict(dense_state)
    evals = torch.from_numpy(arrays["tokens_eval"].astype(np.int64))
    ppl, _ = perplexity(model, evals.reshape(1, -1), evals.shape[1])
    assert ppl == pytest.approx(fx["dense_ppl"], rel=1e-4)
