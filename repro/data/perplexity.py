"""Perplexity test streams, built exactly as the reference code builds them (baselines_neuronal.md §a).

- wikitext2: the test rows joined with "\\n\\n", tokenised as ONE string.
- c4: the first 1100 validation documents joined with " ", tokenised once, cut to the first 256·seqlen tokens.
- ptb: the test sentences joined with " ".
- local_text: a local text file, rows joined with "\\n\\n" (the WikiText protocol), for offline demos.
- gsm8k, code, code_alpaca (multi-objective domains, repro/data/domains.py): the test rows joined with "\\n\\n".

The tokeniser is called with its default `add_special_tokens`, as the references do (LLaMA prepends one BOS to
the whole stream, not to each window).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from repro.config import DataSourceConfig
from repro.data.sources import ASSETS, check_local, describe_source, load_rows

C4_VAL_DOCS = 1100
C4_VAL_SEGMENTS = 256


@dataclass(frozen=True)
class PplProtocol:
    hub_key: str
    join: str
    max_docs: int | None = None            # take the first N rows
    max_segments: int | None = None        # cut the token stream to N·seqlen tokens


PROTOCOLS = {
    "wikitext2": PplProtocol("wikitext2_test", "\n\n"),
    "c4": PplProtocol("c4_validation", " ", max_docs=C4_VAL_DOCS, max_segments=C4_VAL_SEGMENTS),
    "ptb": PplProtocol("ptb_test", " "),
    "local_text": PplProtocol("wikitext2_test", "\n\n"),
}
PPL_DATASETS = tuple(PROTOCOLS)
# Test streams of the multi-objective domains (repro/data/domains.py); their sources come from `objectives`,
# not from a `data.<name>` node, so they are not `eval.ppl.datasets` choices.
DOMAIN_PROTOCOLS = {
    "gsm8k": PplProtocol("gsm8k_test", "\n\n"),
    "code": PplProtocol("code_test", "\n\n"),
    "code_alpaca": PplProtocol("code_alpaca_test", "\n\n"),
}

DEFAULT_LOCAL_TEXT = ASSETS / "wikitext2-test-head.txt"


def check_source(name: str, source: DataSourceConfig) -> None:
    path = source.local_path
    if name == "local_text" and not path:
        path = str(DEFAULT_LOCAL_TEXT)
    check_local(f"data.{name}.local_path", path)


def load_ppl_stream(name: str, source: DataSourceConfig, tokenizer, seqlen: int):
    """Return `(input_ids[1, T], fingerprint)` for one perplexity dataset."""
    proto = PROTOCOLS[name] if name in PROTOCOLS else DOMAIN_PROTOCOLS[name]
    local = source.local_path or (str(DEFAULT_LOCAL_TEXT) if name == "local_text" else None)
    rows = load_rows(proto.hub_key, local, source.hub_path, source.revision, limit=proto.max_docs)
    text = proto.join.join(rows)
    ids = tokenizer(text, return_tensors="pt").input_ids
    if proto.max_segments is not None:
        ids = ids[:, : proto.max_segments * seqlen]
    fingerprint = {
        "protocol": name, "join": proto.join, "rows": len(rows), "max_docs": proto.max_docs,
        "max_segments": proto.max_segments, "tokens": int(ids.shape[1]),
        "bos_first": bool(tokenizer.bos_token_id is not None and ids.shape[1] > 0
                          and int(ids[0, 0]) == tokenizer.bos_token_id),
        "source": describe_source(proto.hub_key, local, source.hub_path, source.revision),
    }
    return ids.to(torch.long), fingerprint
