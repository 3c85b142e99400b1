"""Step 2 of tools/golden/make_fixtures.sh: run ONE reference implementation, unmodified, on one golden model.

Runs in the pinned reference environment (tools/golden/requirements-ref.txt), never in the project's.

    python ref_driver.py --src SRC_DIR --model-dir WORK/<model> --case CASE_ID --out OUT.json

What this thin driver does around the reference code (nothing inside it is edited):
- imports the reference's own `lib` package from SRC_DIR (an untouched `git archive` of the pinned commit);
- replaces the module attribute `get_loaders` that the reference imported (it downloads C4) with a function
  returning the golden calibration windows in the reference's own format `[(inp, tar), ...]`;
- sets `model.seqlen` (the reference's main.py does) and `model.hf_device_map = {}` (set by accelerate in the
  reference's main.py; single device here);
- CPU shims: `Tensor.cuda()` returns the tensor (magnitude pruning sorts on `.cuda()`), `torch.cuda.synchronize`
  is a no-op (SparseGPT calls it); both are device moves only, no numerics;
- stub `datasets` / `weightwatcher` modules (imported at module top by the references, never called here);
- evaluates perplexity with the reference's own loop on the golden evaluation windows (`lib.eval
  .eval_ppl_wikitext`; IST-DASLab/sparsegpt: its `opt_eval`, whose printed value is read);
- records the allocations the references compute by observing, never changing, their functions: OWL's
  `check_outlier_mean` (wrapped) and its printed block ratios (numpy round-trip precision); AlphaPruning's
  `ww_sparsity` (wrapped); NeuroAL's `get_neuroal_block` objectives (wrapped) and returned distribution;
- per repository, the call its main.py makes (see `_wanda_family`, `_ist_sparsegpt`, `_dsnot`, `_alpha`,
  `_neuroal`), with main.py's defaults for every argument it does not vary.

Thin glue, not a copy: no reference function is re-expressed here.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import resource
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

MASK_ROWS_LIMIT = 1 << 15   # modules with more weights than this store only their first MASK_ROWS rows
MASK_ROWS = 16


def _shims():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    _stub("datasets", "load_dataset")


def _load(model_dir: Path, meta: dict, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32,
                                                 attn_implementation=attn)
    model.eval()
    if meta.get("rope_theta") and abs(getattr(model.config, "rope_theta", 0) - meta["rope_theta"]) > 1e-6:
        raise SystemExit(f"rope_theta {model.config.rope_theta} != exported {meta['rope_theta']}")
    return model


def _blocks(model):
    return model.model.decoder.layers if hasattr(model.model, "decoder") else model.model.layers


def _linears(model):
    prefix = "model.decoder.layers" if hasattr(model.model, "decoder") else "model.layers"
    out = {}
    for i, block in enumerate(_blocks(model)):
        for n, m in block.named_modules():
            if isinstance(m, torch.nn.Linear):
                out[f"{prefix}.{i}.{n}"] = m
    return out


def _ppl(lib_eval, model, ids: torch.Tensor, seqlen: int) -> float:
    wrapper = SimpleNamespace(input_ids=ids.reshape(1, -1))
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        return float(lib_eval.eval_ppl_wikitext(model, wrapper, 1, torch.device("cpu")))


def _parse_owl_ratios(text: str):
    m = re.search(r"after adjustment\s*\[([^\]]*)\]", text)
    return None if m is None else [float(v) for v in m.group(1).split()]


def _wanda_family(case, is_opt, loader, n, m, d_seen):
    """locuslab/wanda lib/prune.py (lib/prune_opt.py for OPT) or luuyin/OWL lib/prune_all.py."""
    import importlib
    if case["repo"] == "locuslab/wanda":
        lib_prune = importlib.import_module("lib.prune_opt" if is_opt else "lib.prune")
    else:
        lib_prune = importlib.import_module("lib.prune_all")
    lib_eval = importlib.import_module("lib.eval")
    lib_prune.get_loaders = lambda *args, **kw: (loader, None)
    if hasattr(lib_prune, "check_outlier_mean"):
        orig = lib_prune.check_outlier_mean

        def observed(mask, threshold):
            r = orig(mask, threshold)
            d_seen.append(r)
            return r
        lib_prune.check_outlier_mean = observed
    args = SimpleNamespace(nsamples=len(loader), seed=0, sparsity_ratio=case["sparsity"], use_variant=False,
                           Lamda=case.get("Lamda", 0.08), Hyper_m=case.get("Hyper_m", 5),
                           model=("facebook/opt-golden" if is_opt else "golden-llama"),
                           sparsity_type="unstructured" if not n else f"{n}:{m}")
    fn = getattr(lib_prune, case["fn"])
    return (lambda model: fn(args, model, None, torch.device("cpu"), prune_n=n, prune_m=m),
            lambda model, ids: _ppl(lib_eval, model, ids, ids.shape[1]))


def _stub(name: str, *attrs: str) -> None:
    """An importable empty module for a package the reference imports at module top but this run never uses."""
    import importlib.machinery
    try:
        __import__(name)
    except ImportError:
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for attr in attrs:
            setattr(stub, attr, _never_called)
        sys.modules[name] = stub


def _never_called(*a, **k):
    raise RuntimeError("golden driver: the reference tried to reach the hub")


def _dsnot(case, is_opt, loader, n, m):
    """zyxxmu/DSnoT lib/prune.py `prune_DSnoT` with its main.py defaults."""
    import importlib
    if is_opt:
        raise SystemExit("DSnoT golden cases cover LLaMA only")
    lib_prune = importlib.import_module("lib.prune")
    lib_eval = importlib.import_module("lib.eval")
    lib_prune.get_loaders = lambda *args, **kw: (loader, None)
    args = SimpleNamespace(nsamples=len(loader), seed=0, sparsity_ratio=case["sparsity"],
                           initial_method=case.get("initial_method", "wanda"), max_cycle_time=50,
                           without_DSnoT=False, update_threshold=0.1, pow_of_var_regrowing=1.0,
                           pow_of_var_pruning=1.0, skip_layer="mlp", skip_sub_layer="no_skip",
                           without_same_sign=True, get_time_overhead=False, model="golden-llama",
                           model_type="llama", sparsity_type="unstructured" if not n else f"{n}:{m}")
    return (lambda model: lib_prune.prune_DSnoT(args, model, None, torch.device("cpu"), prune_n=n, prune_m=m),
            lambda model, ids: _ppl(lib_eval, model, ids, ids.shape[1]))


def _alpha(case, is_opt, loader, n, m, seen):
    """haiquanlu/AlphaPruning: the alpha_peak metric of lib/esd_utils.py (as its get_esd_metrics computes it,
    on the loaded model instead of a hub download), cached as the .npy its ww_sparsity reads, then
    `prune_<method>_ww`. `ww_sparsity` is observed (wrapped, unchanged) to record the per-layer ratios."""
    import importlib
    import tempfile
    _stub("weightwatcher")
    lib_prune = importlib.import_module("lib.prune")
    esd = importlib.import_module("lib.esd_utils")
    lib_eval = importlib.import_module("lib.eval")
    lib_prune.get_loaders = lambda *args, **kw: (loader, None)
    cache = tempfile.mkdtemp()
    args = SimpleNamespace(nsamples=len(loader), seed=0, sparsity_ratio=case["sparsity"], use_variant=False,
                           epsilon=case["epsilon"], mapping_type="block_wise", ww_metric="alpha_peak",
                           ww_metric_cache=cache, model="golden-llama", sparsity_type="unstructured")
    orig = lib_prune.ww_sparsity

    def observed(*a, **k):
        r = orig(*a, **k)
        seen.append(list(r))
        return r
    lib_prune.ww_sparsity = observed

    def prune(model):
        blocks = model.model.layers
        np.save(f"{cache}/alpha_peak.npy", esd.net_esd_estimator(blocks, fix_fingers="xmin_peak")["alpha"])
        getattr(lib_prune, case["fn"])(args, model, None, torch.device("cpu"))
    return prune, lambda model, ids: _ppl(lib_eval, model, ids, ids.shape[1])


def _neuroal(case, is_opt, loader, n, m, seen):
    """eliacunegatti/NeuroAL: main.py's flow for `--top_up neuroal --neuroal_step block` (the row step needs the
    repository's compiled CUDA op ops/mask_gen, which cannot run here): `get_neuroal_sparsity_distribution`
    (its 8-sample search set = the first 8 calibration windows, as its get_loaders draws them), then
    `prune_<method>` with that distribution on all windows. The per-λ objectives are observed by wrapping
    `get_neuroal_block` (unchanged). Eager attention: its Catcher slices the 4-D causal mask (None under SDPA)."""
    import importlib
    if is_opt:
        raise SystemExit("NeuroAL golden cases cover LLaMA only")
    _stub("weightwatcher")
    _stub("mask_gen_cuda")          # the CUDA extension behind ops/mask_gen (row step only; never called here)
    sd = importlib.import_module("sparsity_distribution")
    lib_prune = importlib.import_module("lib.prune")
    lib_eval = importlib.import_module("lib.eval")
    sd.get_loaders = lambda *a, **k: (loader[:k["nsamples"]], None)
    orig = sd.get_neuroal_block

    def observed(*a, **k):
        r = orig(*a, **k)
        seen.append(float(r[0]))
        return r
    sd.get_neuroal_block = observed
    args = SimpleNamespace(seed=0, nsamples=len(loader), sparsity_ratio=case["sparsity"], neuroal_step="block",
                           prune_method=case["method"], model_type="llama", top_up="neuroal")
    out = {}

    def prune(model):
        layers = model.model.layers
        with torch.no_grad():
            dist, granularity, lam_block, _ = sd.get_neuroal_sparsity_distribution(args, model, None,
                                                                                   torch.device("cpu"), layers)
            args.nsamples = len(loader)          # main.py: args.nsamples = 128 (= the calibration set) again
            fn = getattr(lib_prune, f"prune_{case['method']}")
            if case["method"] == "magnitude":
                fn(args, model, None, torch.device("cpu"), dist=dist, granularity=granularity)
            else:
                fn(args, model, None, torch.device("cpu"), loader, dist=dist, granularity=granularity)
        out.update(dist=dist, lambda_block=lam_block)
    return prune, (lambda model, ids: _ppl(lib_eval, model, ids, ids.shape[1])), out


def _ist_sparsegpt(case, is_opt, loader, n, m):
    """IST-DASLab/sparsegpt opt.py: `opt_sequential` reads the module-global `args` that its __main__ sets."""
    import importlib
    if not is_opt:
        raise SystemExit("IST-DASLab/sparsegpt llama.py calls the decoder layer without position_ids; "
                         "transformers 4.46 needs them (not run)")
    mod = importlib.import_module("opt")
    mod.args = SimpleNamespace(nsamples=len(loader), minlayer=-1, maxlayer=1000, prune_only="", invert=False,
                               wbits=16, sparsity=case["sparsity"], prunen=n, prunem=m, percdamp=.01,
                               blocksize=128, gmp=False)

    def ppl(model, ids):
        buf = io.StringIO()
        with torch.no_grad(), contextlib.redirect_stdout(buf):
            mod.opt_eval(model, SimpleNamespace(input_ids=ids.reshape(1, -1)), torch.device("cpu"), "golden")
        return float(re.search(r"Perplexity: ([0-9.eE+-]+)", buf.getvalue()).group(1))
    return (lambda model: mod.opt_sequential(model, loader, torch.device("cpu")), ppl)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--cases", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-only", action="store_true",
                   help="benchmarks/vs_reference.py: time the pruning call, write wall time and peak RSS only")
    a = p.parse_args()
    _shims()
    torch.set_num_threads(a.threads)
    case = next(c for c in json.loads(Path(a.cases).read_text())["cases"] if c["id"] == a.case)
    work = Path(a.model_dir)
    meta = json.loads((work / "meta.json").read_text())
    tokens = np.load(work / "tokens.npz")
    calib = torch.from_numpy(tokens["calib"].astype(np.int64))
    evals = torch.from_numpy(tokens["eval"].astype(np.int64))
    seqlen = calib.shape[1]

    sys.path.insert(0, a.src)
    is_opt = meta["spec"]["family"] == "opt"
    loader = [(calib[i:i + 1].clone(), calib[i:i + 1].clone()) for i in range(calib.shape[0])]
    n, m = case["nm"] or (0, 0)
    d_seen: list = []
    alpha_seen: list = []
    neuroal_out: dict = {}
    if case["repo"] == "IST-DASLab/sparsegpt":
        prune, ppl = _ist_sparsegpt(case, is_opt, loader, n, m)
    elif case["repo"] == "zyxxmu/DSnoT":
        prune, ppl = _dsnot(case, is_opt, loader, n, m)
    elif case["repo"] == "eliacunegatti/NeuroAL":
        prune, ppl, neuroal_out = _neuroal(case, is_opt, loader, n, m, alpha_seen)
    elif case["repo"] == "haiquanlu/AlphaPruning":
        prune, ppl = _alpha(case, is_opt, loader, n, m, alpha_seen)
    else:
        prune, ppl = _wanda_family(case, is_opt, loader, n, m, d_seen)

    model = _load(work / "model", meta, case.get("attn", "sdpa"))
    model.seqlen = seqlen
    model.hf_device_map = {}
    dense_ppl = None if a.time_only else ppl(model, evals)

    np.set_printoptions(precision=17, floatmode="unique", linewidth=10 ** 6, threshold=10 ** 6)
    buf = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(buf):
        prune(model)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    log = buf.getvalue()
    if a.time_only:
        lin = _linears(model).values()
        Path(a.out).write_text(json.dumps({
            "wall_s": wall, "cpu_s": cpu, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "sparsity": sum(int((m.weight == 0).sum()) for m in lin) / sum(m.weight.numel() for m in lin),
            "threads": torch.get_num_threads(), "transformers": __import__("transformers").__version__}))
        return

    zeros, masks = {}, {}
    for name, lin in _linears(model).items():
        mask = (lin.weight.data == 0)
        zeros[name] = int(mask.sum())
        rows = mask if mask.numel() <= MASK_ROWS_LIMIT else mask[:MASK_ROWS]
        masks[name] = np.packbits(rows.numpy().reshape(-1))
    res = {"case": case["id"], "zeros": zeros, "numel": {k: v.weight.numel() for k, v in _linears(model).items()},
           "mask_rows": {k: (v.weight.shape[0] if v.weight.numel() <= MASK_ROWS_LIMIT else MASK_ROWS)
                         for k, v in _linears(model).items()},
           "ppl": ppl(model, evals), "dense_ppl": dense_ppl}
    if neuroal_out:
        prefix = "model.layers"
        res["layer_sparsity"] = {f"{prefix}.{k.split('-')[1]}.{k.split('-')[0]}": float(v)
                                 for k, v in neuroal_out["dist"].items()}
        res["lambda_block"] = neuroal_out["lambda_block"]
        res["block_objectives"] = alpha_seen
    elif alpha_seen:
        res["layer_sparsity"] = dict(zip(_linears(model), alpha_seen[0]))
    if d_seen:
        res["outlier_ratios"] = d_seen
        dens = _parse_owl_ratios(log)
        if dens is None:
            raise SystemExit("could not read OWL's printed ratios")
        res["block_sparsity"] = [1 - r for r in dens]
    Path(a.out).write_text(json.dumps(res))
    np.savez(Path(a.out).with_suffix(".npz"), **masks)
    print(f"{meta['model']} {case['id']}: ppl {res['ppl']:.4f} (dense {dense_ppl:.4f})")


if __name__ == "__main__":
    main()
