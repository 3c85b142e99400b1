"""SparseGPT's OBS step alone on SmolLM2-135M's layer shapes, CPU seconds per block, unstructured and 2:4.

    python benchmarks/sparsegpt_obs_shapes.py [TREE] [TAG]     # TREE: a checkout to import `repro` from

Shapes: q/k/v stacked 960 × 576, o 576 × 576, gate/up stacked 3072 × 576, down 576 × 1536 (the engine prunes
linears that share an input together); random weights, H from random activations, one thread. Run it for two
checkouts in alternation (before/after); `masks` in the saved file lets the two be compared.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from repro.methods.sparsegpt import inverse_hessian_factor, sparsegpt_prune  # noqa: E402

torch.set_num_threads(1)
tag = sys.argv[2] if len(sys.argv) > 2 else "ours"
g = torch.Generator().manual_seed(0)
problems = []
for rows, cols in [(960, 576), (576, 576), (3072, 576), (576, 1536)]:
    X = torch.randn(cols, 2048, generator=g)
    hinv, dead = inverse_hessian_factor(2 * X @ X.T / 2048, 0.01)
    problems.append((torch.randn(rows, cols, generator=g), hinv, dead))
masks = []
for n, m in [(0, 0), (2, 4)]:
    cpu = 0.0
    for W, hinv, dead in problems:
        for rep in range(2):                       # the first call warms up
            c = time.process_time()
            out = sparsegpt_prune(W, hinv, dead, [slice(0, W.shape[0])], [0.5], n, m, 128)
            cpu += (time.process_time() - c) if rep else 0.0
        masks.append(out == 0)
    print(f"{tag} ({n}, {m}) per block cpu {cpu:.3f}", flush=True)
torch.save(masks, f"/tmp/sparsegpt_obs_shapes-{tag}.pt")
