"""Evaluation: perplexity (papers' protocol), zero-shot accuracy (lm-eval), inference speed."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def evaluate_all(model, tokenizer, run, seqlen: int):
    """Run every configured evaluation; return `(metrics, protocol)` for the record."""
    from repro.data.perplexity import load_ppl_stream
    from repro.eval.perplexity import perplexity

    metrics, protocol = {}, {}
    ppl_cfg = run.eval.ppl
    L = ppl_cfg.seqlen or seqlen
    if ppl_cfg.datasets:
        metrics["ppl"], protocol["ppl"] = {}, {}
        for name in ppl_cfg.datasets:
            ids, fp = load_ppl_stream(name, getattr(run.data, name), tokenizer, L)
            value, n = perplexity(model, ids, L, ppl_cfg.batch_size, ppl_cfg.max_windows, desc=f"ppl {name}")
            fp.update(seqlen=L, windows=n, max_windows=ppl_cfg.max_windows)
            metrics["ppl"][name] = value
            protocol["ppl"][name] = fp
            log.info("%s perplexity %.4f over %d windows of %d tokens", name, value, n, L)
    if run.eval.zeroshot:
        from repro.eval.zeroshot import evaluate_zeroshot
        metrics["zeroshot"], protocol["zeroshot"] = evaluate_zeroshot(model, tokenizer, run.eval.zeroshot)
    if run.eval.speed:
        from repro.eval.speed import evaluate_speed
        metrics["speed"], protocol["speed"] = evaluate_speed(model, tokenizer, run.eval.speed)
    return metrics, protocol
