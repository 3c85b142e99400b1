"""Build tools/golden/losa_fixture.json by running the LoSA reference's own functions (not copied into repro).

    python tools/golden/losa_fixture.py /path/to/LoSA.git [--rev 51b4e57]

Reads `lib/prune.py` (allocate_ranks) and `CKA/cka.py` (gram_linear, center_gram, cka) from a clone or bare git dir
of wzhuang-xmu/LoSA, extracts those function definitions with `ast` and executes them on fixed inputs:
- allocate_ranks on error vectors of several shapes (flat, steep/accumulating, with ties, one outlier) for
  Ω = 6..10 and L = 30 / 32 / 40 (the one-pass repair misses its target for steep profiles: recorded as is);
- linear CKA between random feature matrices.
tests/test_losa.py compares repro.recovery.losa_math against the stored outputs.
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import torch


def source(repo: Path, rev: str, path: str) -> str:
    if (repo / path).is_file():
        return (repo / path).read_text()
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def functions(src: str, names) -> dict:
    tree = ast.parse(src)
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    ns = {"np": np, "torch": torch}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "<reference>", "exec"), ns)
    return {n: ns[n] for n in names}


def error_profiles(rng: np.random.Generator, n: int) -> dict:
    return {"flat": rng.uniform(0.9, 1.1, n), "uniform": rng.uniform(0.0, 1.0, n) + 1e-3,
            "steep": np.exp(np.linspace(0, 4, n)) * rng.uniform(0.95, 1.05, n),
            "accumulating": np.cumsum(rng.uniform(0.5, 1.5, n)) ** 2,
            "ties": np.repeat(rng.uniform(0.1, 1.0, n // 2 + 1), 2)[:n],
            "outlier": np.concatenate([np.full(n - 1, 0.01), [50.0]])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("repo", type=Path)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("losa_fixture.json"))
    args = ap.parse_args()
    ref = functions(source(args.repo, args.rev, "lib/prune.py"), ["allocate_ranks"])
    cka = functions(source(args.repo, args.rev, "CKA/cka.py"), ["gram_linear", "center_gram", "cka"])
    rng = np.random.default_rng(0)
    ranks = []
    for n in (30, 32, 40):
        for kind, errors in error_profiles(rng, n).items():
            errors = np.array([float(f"{v:.6g}") for v in errors])       # stored exactly as used
            for omega in (6, 7, 8, 9, 10):
                ranks.append({"kind": kind, "omega": omega, "errors": errors.tolist(),
                              "ranks": [int(r) for r in ref["allocate_ranks"](np.array(errors), rank=omega)]})
    torch.manual_seed(0)
    cka_cases = []
    for n, d in ((6, 20), (10, 40)):
        x = torch.randn(n, d, dtype=torch.float64)
        y = 0.5 * x + torch.randn(n, d, dtype=torch.float64)
        z = torch.randn(n, d, dtype=torch.float64)
        for other, name in ((y, "correlated"), (z, "independent"), (2.0 * x + 3.0, "affine")):
            val = float(cka["cka"](cka["gram_linear"](x), cka["gram_linear"](other)))
            cka_cases.append({"case": name, "x": x.tolist(), "y": other.tolist(), "cka": val})
    out = {"source": f"wzhuang-xmu/LoSA {args.rev}: lib/prune.py allocate_ranks, CKA/cka.py cka(gram_linear)",
           "allocate_ranks": ranks, "cka": cka_cases}
    args.out.write_text(json.dumps(out, separators=(",", ":")))
    print(f"{len(ranks)} rank cases, {len(cka_cases)} CKA cases -> {args.out}")


if __name__ == "__main__":
    main()
