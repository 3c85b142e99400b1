"""RestoreLCC's head identification (recovery=restorelcc): activations, lost components, contrastive probes, cache.

Re-expressed from zijian678/restorelcc@b1a8e09 utils/components.py (`obtain_act`, `construct_alpaca`,
`obtain_main_components`, `train_probing_classifier`, `obtain_main_vecs`); no code copied. Math: lcc_math.py.

    probe = probe_heads(model, tokenizer, rows, cfg, run, cache_root)   # {'directions','lost','val_acc',...}

1. Pairs (`probe_pairs`): per row q = the prompt (format=alpaca template), r+ = " " + output, r- = the response of
   the most similar OTHER row among ALL loaded rows (hard negative), then the first `probe_samples` rows only
   (reference: negatives over the 2000 rows, probing on the first 1000). Similarity: `negatives=sbert` encodes the
   responses with sentence-transformers (`sbert_model`, the paper's all-MiniLM-L6-v2); `negatives=lexical` (offline
   stand-in, NOT the paper's) uses bag-of-words cosine. Task rows (`recovery.task`, repro/data/tasks.py): r+ = the
   gold answer, r- = the other answer for BoolQ/RTE (label swap, `construct_boolq`/`construct_rte`) or the most
   similar other choice of the same row for ARC (`construct_arc`; same similarity options), `choice_negatives`.
2. Activations (`capture_texts`): each head's slice of the o_proj INPUT at the last token, via forward pre-hooks
   owned by a context manager (removed in `finally`; the reference uses pyvene). Pruned model (the run's, in
   memory) on q; dense model (reloaded with `repro.models.loading.load_model(cfg.model, seed=cfg.seed)`, the same
   weights the run pruned; freed after use, so peak memory is two models) on q, q+r+, q+r-. Texts are tokenised
   with truncation at `probe_max_length` (512) and batched with right padding (reference: one at a time, fp16).
3. Per head (flat index layer * H + head; the reference's `i * num_layers` formula is only right when L = H):
   V, c = lost_basis(Z_dense(q) - Z_pruned(q), k); x = Z_pruned(q) + c; probe features [x ; Z_dense(q+r+)]
   (label 1) and [x ; Z_dense(q+r-)] (label 0); pair-preserving 70/30 split (seed 42); validation accuracy.
4. Cache: `<results>/restorelcc_probe/<key>/probe.pt`, key = SHA-256 of the pruned model's prune id and every
   setting above. The reference's cache key is (base model, task, n) only: it silently reuses one pruned model's
   heads for another (research note §2.1 step 7); this one does not. Next to it, `stats-<stats_key>/stats.pt`
   (directions, per-head MSE and KL of dense vs pruned prompt activations) for recovery.head_selection=
   random/mse/kl (lcc_select.py), keyed by only what changes those activations (`stats_key`: prune id, prompt rows,
   probe_samples, probe_max_length), so a probe-only setting (probe_epochs, probe_lr, ...) reuses them.
Blocks, the o_proj (OPT: out_proj) and the head shape come from the architecture adapter (repro/recovery/_heads.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from repro.recovery._heads import head_shape, o_proj_pre_hooks
from repro.recovery.lcc_math import (hard_negatives, kl_scores, lost_basis, mse_scores, pair_split, train_probes,
                                     word_counts)

log = logging.getLogger(__name__)
PROBE_VERSION = 1
PROBE_CHUNK = 256              # heads per probe batch (bounds the feature tensor on 1024-head models)


@torch.no_grad()
def capture_head_inputs(model, input_ids, attention_mask=None) -> dict[int, torch.Tensor]:
    """{layer: (n, n_heads, head_dim)} o_proj input at each row's last non-padding token (right padding)."""
    head_dim = head_shape(model.config)[1]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    last = (attention_mask.sum(1) - 1).to(input_ids.device)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    out: dict[int, torch.Tensor] = {}

    def grab(i, args):
        x = args[0][rows, last]                    # (n, n_heads*head_dim)
        out[i] = x.reshape(x.shape[0], -1, head_dim).detach().float().cpu()

    with o_proj_pre_hooks(model, grab):
        model(input_ids=input_ids, attention_mask=attention_mask)
    return out


@torch.no_grad()
def capture_texts(model, tokenizer, texts: list[str], max_length: int, batch: int) -> torch.Tensor:
    """(n, layers, heads, head_dim) last-token o_proj inputs of `texts` (each truncated at max_length tokens)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for s in range(0, len(texts), batch):
        ids = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts[s:s + batch]]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
        acts = capture_head_inputs(model, input_ids, mask)
        out.append(torch.stack([acts[i] for i in range(len(acts))], dim=1))
    return torch.cat(out)


def response_embeddings(responses: list[str], cfg) -> torch.Tensor:
    if cfg.negatives == "sbert":
        from sentence_transformers import SentenceTransformer     # optional: pip install .[restorelcc]
        encoder = SentenceTransformer(cfg.sbert_model)
        return torch.as_tensor(encoder.encode(responses, convert_to_numpy=True))
    return word_counts(responses)


def choice_negatives(rows, cfg) -> list[str]:
    """Per task row, the answer choice that makes its negative: the other one of two (BoolQ/RTE label swap,
    components.py `construct_boolq`/`construct_rte`), else the most similar OTHER choice of the row (ARC,
    `construct_arc`: SBERT cosine; lexical offline)."""
    if all(len(r["choices"]) == 2 for r in rows):
        return [r["choices"][1 - r["gold"]] for r in rows]
    flat = [c for r in rows for c in r["choices"]]
    emb, out, s = response_embeddings(flat, cfg), [], 0
    for r in rows:
        n = len(r["choices"])
        out.append(r["choices"][int(hard_negatives(emb[s:s + n])[r["gold"]])])
        s += n
    return out


def probe_pairs(rows, cfg) -> tuple[list[str], list[str], list[str], dict]:
    """(prompts, positive texts, negative texts, report) of the first `probe_samples` rows."""
    from repro.data.instruct import completion, format_prompt

    data = cfg.train_data()
    prompts = [format_prompt(r, data) for r in rows]
    responses = [completion(r, data) for r in rows]
    if data.task is None:
        rule = "the most similar other response"
        negatives = [responses[j] for j in hard_negatives(response_embeddings(responses, cfg)).tolist()]
    else:
        rule = "label swap" if all(len(r["choices"]) == 2 for r in rows) else "the most similar other choice"
        negatives = choice_negatives(rows, cfg)
    n = min(cfg.probe_samples, len(rows))
    pos_t = [prompts[i] + responses[i] for i in range(n)]
    neg_t = [prompts[i] + negatives[i] for i in range(n)]
    report = {"task": cfg.task, "negative_rule": rule, "pool": len(rows), "pairs": n}
    if rule != "label swap":
        report["negatives"] = cfg.negatives
        if cfg.negatives == "sbert":
            report["sbert_model"] = cfg.sbert_model
        else:
            report["standin"] = "bag-of-words cosine hard negatives: NOT the paper's SBERT all-MiniLM-L6-v2"
    return prompts[:n], pos_t, neg_t, report


def _data_fields(cfg, only=None) -> dict:
    """The training-data settings (`only`: those named), a local file counted by its content, not its location."""
    from repro.fingerprint import fingerprint

    data = asdict(cfg.train_data())
    if only is not None:
        data = {k: data[k] for k in only}
    for name in ("path", "task_path"):
        if data.get(name):
            data[name] = fingerprint(data[name]) or data[name]
    return data


def _hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def probe_key(prune_id: str, cfg) -> str:
    """Cache key: the pruned model's identity + every setting that changes the probes (not top_heads/training)."""
    return _hash({"version": PROBE_VERSION, "prune_id": prune_id, "data": _data_fields(cfg), "task": cfg.task,
                  "k": cfg.k, "negatives": cfg.negatives,
                  "sbert_model": cfg.sbert_model if cfg.negatives == "sbert" else None,
                  **{f: getattr(cfg, f) for f in ("probe_samples", "probe_max_length", "probe_epochs", "probe_lr",
                                                  "probe_val_fraction", "probe_seed")}})


# what decides the probed prompts: the loaded rows (instruct.load_rows) and their prompt (instruct.format_prompt)
PROMPT_DATA = ("path", "revision", "split", "rows", "subset", "seed", "task", "task_path", "prompt_template",
               "prompt_template_no_input")


def stats_key(prune_id: str, cfg) -> str:
    """Key of the activation statistics (directions V, MSE, KL): the pruned model's identity (its prune id holds the
    dense model and seed the dense activations are reloaded from), the prompts (PROMPT_DATA of the data, the first
    `probe_samples`) and their truncation. Not k (V holds all d_h directions; k shapes only the probe's lost
    component), negatives, or the probe's training settings: none of them changes a prompt activation."""
    return _hash({"version": PROBE_VERSION, "prune_id": prune_id, "data": _data_fields(cfg, PROMPT_DATA),
                  "probe_samples": cfg.probe_samples, "probe_max_length": cfg.probe_max_length})


def head_scores(z_pruned, z_dense, z_pos, z_neg, cfg) -> dict:
    """Directions (L, H, d, d), lost components (L, H, d) and probe validation accuracy (L, H) from the
    (n, L, H, d) activations."""
    n, n_layers, n_heads, d = z_pruned.shape
    flat = lambda z: z.reshape(n, n_layers * n_heads, d).transpose(0, 1)   # noqa: E731  (heads, n, d)
    zp, zd, zpos, zneg = flat(z_pruned), flat(z_dense), flat(z_pos), flat(z_neg)
    dirs, lost = torch.empty(n_layers * n_heads, d, d), torch.empty(n_layers * n_heads, d)
    for h in range(n_layers * n_heads):
        dirs[h], lost[h] = lost_basis(zd[h] - zp[h], cfg.k)
    x = zp + lost[:, None, :]
    tr, va = pair_split(n, cfg.probe_val_fraction, cfg.probe_seed)
    acc = torch.empty(n_layers * n_heads)
    for s in range(0, n_layers * n_heads, PROBE_CHUNK):
        e = min(s + PROBE_CHUNK, n_layers * n_heads)
        pos, neg = torch.cat([x[s:e], zpos[s:e]], -1), torch.cat([x[s:e], zneg[s:e]], -1)
        acc[s:e] = train_probes(pos, neg, tr, va, cfg.probe_epochs, cfg.probe_lr, seed=cfg.probe_seed + s)
    return {"directions": dirs.reshape(n_layers, n_heads, d, d), "lost": lost.reshape(n_layers, n_heads, d),
            "val_acc": acc.reshape(n_layers, n_heads), "n_train": len(tr), "n_val": len(va)}


def cache_dir(cache_root: Path, cfg, prune_id: str, stats: bool = False) -> tuple[str, Path]:
    """(key, folder) of this pruned model's probe (`probe.pt`), or with `stats` its activation statistics
    (`stats.pt`, folder `stats-<stats_key>`), under `<results>/restorelcc_probe`."""
    key = stats_key(prune_id, cfg) if stats else probe_key(prune_id, cfg)
    return key, Path(cache_root) / "restorelcc_probe" / (f"stats-{key}" if stats else key)


def save_cached(folder: Path, name: str, obj) -> Path:
    """torch.save `obj` to folder/name atomically (written as `.tmp`, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def probe_heads(model, tokenizer, rows, cfg, run, cache_root: Path, prune_id: str) -> dict:
    """The cached probe of this pruned model (computed and stored when absent); see the module docstring."""
    from repro.models.loading import load_model

    key, folder = cache_dir(cache_root, cfg, prune_id)
    path = folder / "probe.pt"
    if path.is_file():
        out = torch.load(path, weights_only=True)
        log.info("restorelcc: reusing the head probe %s", path)
        return {**out, "key": key, "path": str(path), "reused": True}
    t0 = time.perf_counter()
    prompts, pos_t, neg_t, pairs = probe_pairs(rows, cfg)
    grab = lambda m, texts: capture_texts(m, tokenizer, texts, cfg.probe_max_length, cfg.capture_batch)  # noqa
    z_pruned = grab(model, prompts)
    dense, _ = load_model(run.model, seed=run.seed)
    try:
        z_dense, z_pos, z_neg = grab(dense, prompts), grab(dense, pos_t), grab(dense, neg_t)
    finally:
        del dense
    t1 = time.perf_counter()
    out = head_scores(z_pruned, z_dense, z_pos, z_neg, cfg)
    out["meta"] = json.dumps({**pairs, "prune_id": prune_id, "capture_s": t1 - t0,
                              "probe_s": time.perf_counter() - t1})
    save_cached(folder, "probe.pt", out)
    save_cached(cache_dir(cache_root, cfg, prune_id, stats=True)[1], "stats.pt",
                {"directions": out["directions"], "mse": mse_scores(z_dense, z_pruned).float(),
                 "kl": kl_scores(z_dense, z_pruned).float(), "meta": out["meta"]})
    # (stats.pt: recovery.head_selection=mse/kl/random reuse these, repro/recovery/lcc_select.py)
    return {**out, "key": key, "path": str(path), "reused": False}
