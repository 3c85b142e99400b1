"""Side by side: the ORIGINAL reference code vs this project, same model, tokens and threads (issue #19 §1).

    python benchmarks/vs_reference.py --threads 1 2 --methods magnitude_50 wanda_50 sparsegpt_50 --reps 1
    REF_PYTHON=/tmp/repro-golden-venv/bin/python REF_SRC=/tmp/repro-golden-src python benchmarks/vs_reference.py
    git worktree add /tmp/before <commit>; python benchmarks/vs_reference.py --base-tree /tmp/before --no-ref ...
    python benchmarks/vs_reference.py --methods forward --threads 1 2 --batches 8    # the unit: one dense pass

The reference runs from the pinned environment that tools/golden/make_fixtures.sh builds (REF_PYTHON, with the
reference sources exported under REF_SRC), as a subprocess through tools/golden/ref_driver.py --time-only (the
reference's own prune function, unmodified; see that file for the thin CPU shims). This project runs in its own
subprocess through `repro.prune.pipeline.prune_model`. Both read the same saved SmolLM2-135M HF directory (the
offline GGUF conversion, fp32) and the same calibration windows (default 32 × 512 tokens of the bundled text via
the project's `env=offline` sampler), with the same `torch.set_num_threads`. Runs alternate (ref, ours b8,
ours b1, ref, ...) so that a change in machine load hits both sides; each line reports the medians, the ratio
ref/ours (> 1: ours is faster), peak RSS of each process (model included) and the load average around the runs.
Only the pruning call is timed (model loading and interpreter start-up excluded) on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tools" / "golden" / "cases.json"
FORWARD = "forward"     # not a method: one dense forward pass of the calibration set (`--methods forward`)


def _prepare(work: Path, nsamples: int, seqlen: int) -> None:
    import numpy as np
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools" / "golden"))
    from export_inputs import legacy_config
    from repro.data.calibration import load_calibration
    from repro.models.loading import load_model
    from tests.conftest import compose_run

    run = compose_run("env=offline", "model=smollm2-135m", f"calib.nsamples={nsamples}", f"calib.seqlen={seqlen}")
    model, tok = load_model(run.model)
    calib = load_calibration(run.calib, tok, seqlen).input_ids
    model.save_pretrained(str(work / "model"))
    legacy_config(work / "model")
    np.savez(work / "tokens.npz", calib=calib.numpy(), eval=calib[:1].numpy())
    theta = (getattr(model.config, "rope_parameters", None) or {}).get("rope_theta")
    (work / "meta.json").write_text(json.dumps({"model": "smollm2-135m", "rope_theta": theta,
                                                "spec": {"family": "llama"}}))


def child_ours(work: Path, case_id: str, threads: int, batch: int, out: Path) -> None:
    """Runs in a fresh interpreter: load, then time only `prune_model` (of the checkout in $VS_REF_TREE if set:
    `--base-tree`, the code before a change)."""
    import numpy as np
    import torch
    sys.path.insert(0, os.environ.get("VS_REF_TREE", str(ROOT)))
    from repro.models.adapter import adapter_for
    from repro.models.loading import load_model
    from repro.prune.pipeline import measure_sparsity, prune_model
    from tests.conftest import compose_run

    torch.set_num_threads(threads)
    ids = torch.from_numpy(np.load(work / "tokens.npz")["calib"].astype(np.int64))
    if case_id == FORWARD:
        return _time_forward(work, ids, batch, out)
    case = next(c for c in json.loads(CASES.read_text())["cases"] if c["id"] == case_id)
    run = compose_run("env=offline", "model=smollm2-135m", *case["ours"], f"sparsity={case['sparsity']}",
                      f"calib.batch_size={batch}", f"calib.nsamples={ids.shape[0]}")
    model, _ = load_model(run.model)
    adapter = adapter_for(model)
    t0, c0 = time.perf_counter(), time.process_time()
    prune_model(model, adapter, run, ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "sparsity": measure_sparsity(model, adapter)["overall"],
                               "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
                               "threads": torch.get_num_threads()}))


def _time_forward(work: Path, ids, batch: int, out: Path) -> None:
    """The unit the pruning targets are stated in: one dense forward pass of the calibration set through the
    decoder (embeddings, blocks, final norm: `model.base_model`, no LM head, as the engine's passes; no KV cache,
    no grad, `batch` sequences per call), the same saved model and tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(work / "model"), torch_dtype=torch.float32).eval()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(0, ids.shape[0], batch):
            model.base_model(ids[i:i + batch], use_cache=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "sparsity": 0.0, "threads": torch.get_num_threads(),
                               "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def _run(cmd, out: Path, threads: int, tree: str = "") -> dict:
    env = dict(os.environ, VS_REF_TREE=tree, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    load0 = os.getloadavg()[0]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    res = json.loads(out.read_text())
    res["load1_before"], res["load1_after"] = round(load0, 2), round(os.getloadavg()[0], 2)
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["magnitude_50", "wanda_50", "sparsegpt_50"],
                   help="case ids of tools/golden/cases.json, or `forward`: one dense pass of the calibration set")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batches", nargs="+", type=int, default=[8, 1], help="our calib.batch_size values")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--base-tree", help="also time this checkout of the project (e.g. `git worktree add DIR "
                   "<commit>`), alternating with the others: columns base_b<batch>")
    p.add_argument("--no-ref", action="store_true", help="skip the reference (before/after runs only)")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--work", default=str(Path.home() / ".cache" / "repro" / "vs_reference"))
    p.add_argument("--child", nargs=5, metavar=("WORK", "CASE", "THREADS", "BATCH", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        w, c, t, b, o = a.child
        return child_ours(Path(w), c, int(t), int(b), Path(o))

    ref_py = os.environ.get("REF_PYTHON", "/tmp/repro-golden-venv/bin/python")
    ref_src = Path(os.environ.get("REF_SRC", "/tmp/repro-golden-src"))
    work = Path(a.work) / f"smollm2-{a.nsamples}x{a.seqlen}"
    if not (work / "tokens.npz").exists():
        work.mkdir(parents=True, exist_ok=True)
        _prepare(work, a.nsamples, a.seqlen)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    cases = {c["id"]: c for c in json.loads(CASES.read_text())["cases"]}
    cases[FORWARD] = {"repo": "(none: a plain transformers forward)"}
    tmp = Path(tempfile.mkdtemp(prefix="vs_ref-"))
    for case_id in a.methods:
        repo = ref_src / cases[case_id]["repo"].replace("/", "+")
        for threads in a.threads:
            no_ref = a.no_ref or case_id == FORWARD
            sides = ([] if no_ref else ["ref"]) + [f"{w}_b{b}" for b in a.batches
                                                     for w in (["base"] if a.base_tree else []) + ["ours"]]
            times: dict = {k: [] for k in sides}
            for rep in range(a.reps):
                out = tmp / f"ref-{case_id}-{threads}-{rep}.json"
                if not no_ref:
                    times["ref"].append(_run([ref_py, str(ROOT / "tools/golden/ref_driver.py"), "--src", str(repo),
                                          "--model-dir", str(work), "--case", case_id, "--cases", str(CASES),
                                          "--out", str(out), "--threads", str(threads), "--time-only"],
                                         out, threads))
                for k in sides[0 if no_ref else 1:]:
                    who, b = k.split("_b")
                    out = tmp / f"{k}-{case_id}-{threads}-{rep}.json"
                    times[k].append(_run([sys.executable, str(Path(__file__).resolve()), "--child", str(work),
                                          case_id, str(threads), b, str(out)], out, threads,
                                         a.base_tree if who == "base" else ""))
            line = {"method": case_id, "model": "smollm2-135m", "tokens": f"{a.nsamples}x{a.seqlen}",
                    "threads": threads, "reps": a.reps, "commit": commit, "ref_repo": cases[case_id]["repo"]}
            if times.get("ref"):
                line["ref_transformers"] = times["ref"][0].get("transformers")
            med, cpu = {}, {}
            for k, v in times.items():
                med[k] = statistics.median(r["wall_s"] for r in v)
                cpu[k] = statistics.median(r.get("cpu_s", float("nan")) for r in v)
                line.update({f"{k}_wall_s": round(med[k], 2), f"{k}_cpu_s": round(cpu[k], 2),
                             f"{k}_peak_rss_gib": round(max(r["peak_rss_gib"] for r in v), 3),
                             f"{k}_sparsity": round(v[0]["sparsity"], 5)})
            for k in times:
                for over in ("ref", k.replace("ours", "base")):
                    if k.startswith("ours") and over in times:
                        line[f"ratio_{over}_over_{k}"] = round(med[over] / med[k], 3)
                        line[f"cpu_ratio_{over}_over_{k}"] = round(cpu[over] / cpu[k], 3)
            line["load1"] = [r["load1_before"] for rep in range(a.reps) for v in times.values() for r in v[rep:rep + 1]]
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
