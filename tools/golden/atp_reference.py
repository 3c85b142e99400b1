"""Golden fixture for repro/allocation/atp.py from the ATP reference code (wzhuang-xmu/ATP @ 56b8437).

Executes the reference main.py's own statements from `length = len(model.model.layers)` to the "Illegal beta"
check (the progression and its legality test), with a stand-in model of L layers, for several (L, s, β), and
writes the block sparsities / legality to tests/golden/atp_reference.json. The β grid of search.sh (0.002 steps
while legal) is recorded as the list of legal βs. Nothing is copied into repro.

    git clone https://github.com/wzhuang-xmu/ATP /tmp/ATP && git -C /tmp/ATP checkout 56b8437
    python tools/golden/atp_reference.py /tmp/ATP          # standard library + nothing else
"""
import argparse
import json
import types
from decimal import Decimal
from pathlib import Path


def reference_rule(src: str, nlayers: int, sparsity: float, beta: float):
    start = src.rindex("\n", 0, src.index("length = len(model.model.layers)")) + 1
    end = src.index("sys.exit(1)", start)
    end = src.index("\n", end)
    body = "\n".join(line[4:] for line in src[start:end].splitlines())
    exited = []
    model = types.SimpleNamespace(model=types.SimpleNamespace(layers=[None] * nlayers))
    scope = {"model": model, "args": types.SimpleNamespace(beta=beta, sparsity_ratio=sparsity),
             "print": lambda *a, **k: None, "sys": types.SimpleNamespace(exit=lambda code: exited.append(code))}
    exec(body, scope)
    return [float(x) for x in scope["sparsity_rates"]], not exited


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("atp_checkout")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "tests/golden/atp_reference.json"))
    args = ap.parse_args()
    src = (Path(args.atp_checkout) / "main.py").read_text()
    cases = []
    for nlayers in (30, 32, 40):
        for sparsity in (0.5, 0.6, 0.7, 0.8):
            legal = []
            beta = Decimal("0.002")                  # search.sh: beta=0.002, += 0.002 (bc) until "Illegal beta"
            while True:
                rates, ok = reference_rule(src, nlayers, sparsity, float(beta))
                if not ok:
                    break
                legal.append(float(beta))
                beta += Decimal("0.002")
            for b in (legal[0], legal[len(legal) // 2], legal[-1], float(beta)):
                rates, ok = reference_rule(src, nlayers, sparsity, b)
                cases.append({"nlayers": nlayers, "sparsity": sparsity, "beta": b, "legal": ok, "rates": rates})
            cases.append({"nlayers": nlayers, "sparsity": sparsity, "search_betas": legal})
    Path(args.out).write_text(json.dumps({"source": "wzhuang-xmu/ATP 56b8437 main.py:58-66 + search.sh "
                                          "(tools/golden/atp_reference.py)", "cases": cases}))
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
