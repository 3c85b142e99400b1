"""RestoreLCC head selection (recovery.head_selection) and compensation form (recovery.compensation): the paper's
Table 4 ablation axes. Math: lcc_math.py; the contrastive probe: lcc_probe.py.

    selected, directions, report = choose_heads(model, tokenizer, rows, cfg, run, cache_root, prune_id, live)

`head_selection`:
- `probe` (the method): top heads by contrastive-probe validation accuracy (lcc_probe.probe_heads, cached).
- `random`: a seeded uniform draw (`selection_seed`) of live heads. Needs no probe; the directions V come from the
  probe cache when it exists, else from the activation statistics below.
- `mse`: top heads by the mean squared difference of dense vs pruned head activations (o_proj input slice, last
  prompt token, the probe's prompts).
- `kl`: [RECON] top heads by mean KL(softmax(z_dense) || softmax(z_pruned)) over each head's d_h coordinates. The
  reference code has no MSE/KL selection and the ablation's definition was not seen: a reconstruction
  (experiments/restorelcc/NOTES.md).
The activation statistics (directions V, MSE, KL) need only the dense and pruned captures of the prompts (two of the
probe's four captures, no probe training); they are cached as `stats.pt` next to the probe's `probe.pt`, keyed by
lcc_probe.stats_key (only what changes those activations: not k, negatives or the probe's training settings), and a
probe run writes them too, so a later mse/kl/random run on the same pruned model and prompts reuses them.

`compensation`: `full` c = V^T beta + b (the method), `no_bias` c = V^T beta (Table 4 "w/o b"), `bias_only` c = b
(Table 4 "w/o Σβv"; needs no V, so `head_selection=random compensation=bias_only` captures nothing).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from repro.recovery.lcc_math import kl_scores, lost_basis, mse_scores, random_scores, select_heads
from repro.recovery.lcc_probe import cache_dir, capture_texts, probe_heads, save_cached

log = logging.getLogger(__name__)
SELECTIONS = ("probe", "random", "mse", "kl")
COMPENSATIONS = ("full", "no_bias", "bias_only")


def activation_stats(z_dense: torch.Tensor, z_pruned: torch.Tensor) -> dict:
    """Directions (L, H, d, d), MSE (L, H) and KL (L, H) of (n, L, H, d) dense/pruned prompt activations."""
    n, n_layers, n_heads, d = z_dense.shape
    dirs = torch.empty(n_layers, n_heads, d, d)
    for i in range(n_layers):
        for h in range(n_heads):
            dirs[i, h] = lost_basis(z_dense[:, i, h] - z_pruned[:, i, h], 1)[0]
    return {"directions": dirs, "mse": mse_scores(z_dense, z_pruned).float(), "kl": kl_scores(z_dense, z_pruned).float()}


def head_stats(model, tokenizer, rows, cfg, run, cache_root: Path, prune_id: str) -> dict:
    """The cached activation statistics of this pruned model (computed from the prompts when absent)."""
    from repro.data.instruct import format_prompt
    from repro.models.loading import load_model

    key, folder = cache_dir(cache_root, cfg, prune_id, stats=True)
    path = folder / "stats.pt"
    if path.is_file():
        log.info("restorelcc: reusing the activation statistics %s", path)
        return {**torch.load(path, weights_only=True), "key": key, "path": str(path), "reused": True}
    t0 = time.perf_counter()
    prompts = [format_prompt(r, cfg.train_data()) for r in rows[:cfg.probe_samples]]
    z_pruned = capture_texts(model, tokenizer, prompts, cfg.probe_max_length, cfg.capture_batch)
    dense, _ = load_model(run.model, seed=run.seed)
    try:
        z_dense = capture_texts(dense, tokenizer, prompts, cfg.probe_max_length, cfg.capture_batch)
    finally:
        del dense
    stats = activation_stats(z_dense, z_pruned)
    stats["meta"] = json.dumps({"prompts": len(prompts), "prune_id": prune_id, "capture_s": time.perf_counter() - t0})
    save_cached(folder, "stats.pt", stats)
    return {**stats, "key": key, "path": str(path), "reused": False}


def _cached_directions(cache_root: Path, cfg, prune_id: str):
    for path in (cache_dir(cache_root, cfg, prune_id)[1] / "probe.pt",
                 cache_dir(cache_root, cfg, prune_id, stats=True)[1] / "stats.pt"):
        if path.is_file():
            return torch.load(path, weights_only=True)["directions"], str(path)
    return None, None


def choose_heads(model, tokenizer, rows, cfg, run, cache_root: Path, prune_id: str, live: torch.Tensor) -> tuple:
    """(selected flat head indices, directions (L, H, d, d) or None for bias_only, report) per cfg.head_selection."""
    need_dirs = cfg.compensation != "bias_only"
    report: dict = {"head_selection": cfg.head_selection, "compensation_form": cfg.compensation}
    if cfg.head_selection == "probe":
        probe = probe_heads(model, tokenizer, rows, cfg, run, cache_root, prune_id)
        acc = probe["val_acc"]
        selected = select_heads(acc, cfg.top_heads, live)
        report["probe"] = {"key": probe["key"], "path": probe["path"], "reused": probe["reused"],
                           **json.loads(probe["meta"]), "val_acc_mean": float(acc.mean()),
                           "val_acc_selected_min": float(acc.flatten()[selected].min()),
                           "val_acc_max": float(acc.max())}
        return selected, probe["directions"] if need_dirs else None, report
    if cfg.head_selection == "random":
        selected = select_heads(random_scores(live.shape, cfg.selection_seed), cfg.top_heads, live)
        report["selection_seed"] = cfg.selection_seed
        if not need_dirs:
            return selected, None, report
        dirs, path = _cached_directions(cache_root, cfg, prune_id)
        if dirs is not None:
            report["stats"] = {"path": path, "reused": True}
            return selected, dirs, report
    stats = head_stats(model, tokenizer, rows, cfg, run, cache_root, prune_id)
    report["stats"] = {"key": stats["key"], "path": stats["path"], "reused": stats["reused"], **json.loads(stats["meta"])}
    if cfg.head_selection != "random":
        score = stats[cfg.head_selection]
        selected = select_heads(score, cfg.top_heads, live)
        report["stats"].update({f"{cfg.head_selection}_mean": float(score.mean()),
                                f"{cfg.head_selection}_selected_min": float(score.flatten()[selected].min())})
    return selected, stats["directions"] if need_dirs else None, report
