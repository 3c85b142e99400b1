"""Step 3 of tools/golden/make_fixtures.sh: gather the reference outputs into tests/golden/<model>.{json,npz}.

    python tools/golden/pack.py WORKDIR REFS_TXT REF_VERSIONS_JSON COMMAND
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main(workdir: str, refs_txt: str, versions_json: str, command: str) -> None:
    work = Path(workdir)
    refs = dict(line.split()[:2] for line in Path(refs_txt).read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    versions = json.loads(Path(versions_json).read_text())
    cases = json.loads((ROOT / "tools/golden/cases.json").read_text())["cases"]
    out_dir = ROOT / "tests/golden"
    out_dir.mkdir(exist_ok=True)
    for model_dir in sorted(p for p in work.iterdir() if (p / "meta.json").exists()):
        meta = json.loads((model_dir / "meta.json").read_text())
        tokens = np.load(model_dir / "tokens.npz")
        arrays = {"tokens_calib": tokens["calib"].astype(np.uint16), "tokens_eval": tokens["eval"].astype(np.uint16)}
        fx = {"model": meta["model"], "spec": meta["spec"], "weights_sha256": meta["weights_sha256"],
              "command": command, "reference_env": versions, "references": {}, "cases": {}}
        for case in cases:
            res_path = work / "out" / f"{meta['model']}.{case['id']}.json"
            if meta["model"] not in case["models"] or not res_path.exists():
                continue
            res = json.loads(res_path.read_text())
            fx["dense_ppl"] = res["dense_ppl"]
            fx["references"][case["repo"]] = refs[case["repo"]]
            entry = {k: case[k] for k in ("repo", "fn", "sparsity", "nm", "ours")}
            entry["commit"] = refs[case["repo"]]
            entry.update({k: res[k] for k in ("zeros", "mask_rows", "ppl") if k in res})
            for k in ("block_sparsity", "outlier_ratios", "layer_sparsity", "lambda_block", "block_objectives"):
                if k in res:
                    entry[k] = res[k]
            fx["cases"][case["id"]] = entry
            masks = np.load(res_path.with_suffix(".npz"))
            t2 = res_path.with_name(res_path.stem + ".t2.json")
            if t2.exists():   # the reference against itself on 2 threads: its own float noise
                masks2 = np.load(t2.with_suffix(".npz"))
                entry["ref_thread_noise"] = {
                    "mask_entries": {k: int(np.unpackbits(masks[k] ^ masks2[k]).sum()) for k in masks.files},
                    "ppl_rel": abs(json.loads(t2.read_text())["ppl"] / res["ppl"] - 1)}
            for mod in masks.files:
                arrays[f"{case['id']}/{mod}"] = masks[mod]
        if not fx["cases"]:
            continue
        (out_dir / f"{meta['model']}.json").write_text(json.dumps(fx, indent=1) + "\n")
        np.savez_compressed(out_dir / f"{meta['model']}.npz", **arrays)
        print(f"{meta['model']}: {len(fx['cases'])} cases")


if __name__ == "__main__":
    main(*sys.argv[1:5])
