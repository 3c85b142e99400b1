"""Calibration windows, sampled exactly as the reference code samples them (baselines_neuronal.md §a).

- c4 (all papers): shard `en/c4-train.00000-of-01024.json.gz` in its original row order; `random.seed(seed)`;
  per sample draw `randint(0, len(docs) - 1)`, tokenise the *whole* document (default special tokens, so LLaMA
  prepends BOS), accept only if `len > seqlen` (not `>=`), else draw again; then draw `randint(0, len - seqlen - 1)`
  and take `[i, i + seqlen)`.
- wikitext2 (SparseGPT's alternative): the train rows joined with " ", tokenised once; per sample draw
  `randint(0, T - seqlen - 1)`.
- gsm8k, code, code_alpaca (multi-objective domains, repro/data/domains.py): rows joined with "\n\n", tokenised
  once, the wikitext2 sampler (the rows are far shorter than a window).
- local_text: the wikitext2 sampler over a local text file (default: the bundled WikiText-2 test *tail*, which is
  disjoint from the bundled evaluation slice). An offline stand-in, not a paper protocol.

Deviation: we draw from a private `random.Random(seed)` instead of seeding the global generator. The sequence is
identical (same Mersenne Twister, same `randint`), and other code's use of `random` cannot shift it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch

from repro.config import CalibConfig
from repro.data.sources import ASSETS, check_local, describe_source, load_rows

DEFAULT_LOCAL_CALIB = ASSETS / "wikitext2-test-tail.txt"
MAX_CONSECUTIVE_REJECTS = 100_000   # never reached on C4 (a few % of documents exceed 2048 tokens)


@dataclass
class CalibrationSet:
    input_ids: torch.Tensor            # [nsamples, seqlen], long
    picks: List[Tuple[int, int]]       # (document index or -1, window offset) per sample
    fingerprint: dict


def sample_document_windows(docs: Sequence[str], tokenize: Callable[[str], List[int]], nsamples: int,
                            seqlen: int, seed: int) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """The C4 sampler: random documents longer than `seqlen` tokens, one random window from each."""
    rng = random.Random(seed)
    windows, picks = [], []
    for _ in range(nsamples):
        for _draw in range(MAX_CONSECUTIVE_REJECTS):
            doc = rng.randint(0, len(docs) - 1)
            ids = tokenize(docs[doc])
            if len(ids) > seqlen:
                break
        else:  # the references would loop forever here
            raise ValueError(f"{MAX_CONSECUTIVE_REJECTS} documents in a row had <= {seqlen} tokens: the calibration "
                             f"source has (almost) no document longer than seqlen; lower calib.seqlen or use "
                             f"another source")
        start = rng.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start:start + seqlen])
        picks.append((doc, start))
    return torch.tensor(windows, dtype=torch.long), picks


def sample_stream_windows(stream: torch.Tensor, nsamples: int, seqlen: int,
                          seed: int) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """The WikiText sampler: random windows of one token stream `[1, T]`."""
    rng = random.Random(seed)
    total = stream.shape[1]
    if total <= seqlen + 1:
        raise ValueError(f"calibration text has {total} tokens, fewer than seqlen + 2 = {seqlen + 2}")
    windows, picks = [], []
    for _ in range(nsamples):
        start = rng.randint(0, total - seqlen - 1)
        windows.append(stream[0, start:start + seqlen])
        picks.append((-1, start))
    return torch.stack(windows).to(torch.long), picks


CALIBRATION_SOURCES = ("c4", "wikitext2", "local_text", "gsm8k", "code", "code_alpaca")
# Short-row domains (repro/data/domains.py): rows joined with "\n\n", random windows of the token stream.
STREAM_DOMAINS = {"gsm8k": "gsm8k_train", "code": "code_train", "code_alpaca": "code_alpaca_train"}


def check_calibration(cfg: CalibConfig) -> None:
    check_local("calib.local_path", cfg.local_path)


def load_calibration(cfg: CalibConfig, tokenizer, seqlen: int) -> CalibrationSet:
    fp = {"name": cfg.name, "nsamples": cfg.nsamples, "seqlen": seqlen, "seed": cfg.seed}
    if cfg.name == "c4":
        docs = load_rows("c4_train", cfg.local_path, cfg.hub_path)
        ids, picks = sample_document_windows(docs, lambda t: tokenizer(t).input_ids, cfg.nsamples, seqlen, cfg.seed)
        fp.update(accept="len > seqlen", source=describe_source("c4_train", cfg.local_path, cfg.hub_path))
    elif cfg.name in STREAM_DOMAINS:
        rows = load_rows(STREAM_DOMAINS[cfg.name], cfg.local_path, cfg.hub_path)
        stream = tokenizer("\n\n".join(rows), return_tensors="pt").input_ids
        ids, picks = sample_stream_windows(stream, cfg.nsamples, seqlen, cfg.seed)
        fp.update(join="\n\n", source=describe_source(STREAM_DOMAINS[cfg.name], cfg.local_path, cfg.hub_path))
    else:
        local = cfg.local_path or (str(DEFAULT_LOCAL_CALIB) if cfg.name == "local_text" else None)
        rows = load_rows("wikitext2_train", local, cfg.hub_path)
        stream = tokenizer(" ".join(rows), return_tensors="pt").input_ids
        ids, picks = sample_stream_windows(stream, cfg.nsamples, seqlen, cfg.seed)
        fp.update(join=" ", source=describe_source("wikitext2_train", local, cfg.hub_path))
    fp["picks_sha256"] = _digest(picks)
    return CalibrationSet(ids, picks, fp)


def _digest(picks) -> str:
    import hashlib

    return hashlib.sha256(repr(picks).encode()).hexdigest()[:16]
