"""Preflight checks of local data files (repro/run.py `preflight`), before the model loads: a missing, empty,
unreadable (binary, wrong format) or too short file fails with the user's own override name
(`data.wikitext2.local_path=...`, `calib.local_path=...`). Cheap: reads at most the first 16 MiB.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Optional

from repro.config import ConfigError

HEAD = 16 << 20
FORMATS = ".txt with one row per line, .json, .jsonl, .json.gz or .parquet"
SUFFIXES = (".txt", ".json", ".jsonl", ".json.gz", ".parquet")


def _text_head(p: Path, field: str, value: str) -> Optional[str]:
    """The first HEAD bytes of the file's text (None for formats not checked here: .parquet)."""
    name = p.name.lower()
    try:
        if name.endswith(".parquet"):
            return None
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rb") as f:
            raw = f.read(HEAD)
    except OSError as e:
        raise ConfigError(field, value, f"a readable file ({FORMATS})", f"Reading it failed: {e}") from None
    if b"\0" in raw:
        raise ConfigError(field, value, f"a text file ({FORMATS})", "It contains NUL bytes (a binary file?).")
    text = raw.decode("utf-8", errors="ignore" if len(raw) == HEAD else "strict") if raw else ""
    if name.endswith((".jsonl", ".json.gz")):
        first = next((line for line in text.splitlines() if line.strip()), "")
        try:
            row = json.loads(first) if first else None
        except ValueError:
            row = None
        if first and not isinstance(row, dict):
            raise ConfigError(field, value, f"one JSON object per line ({FORMATS})",
                              f"Its first line is: {first[:80]!r}")
    return text


def check_text_file(field: str, value: Optional[str], min_tokens: Optional[int] = None) -> None:
    """`value` (a path the user gave as `field`) exists, has a known format, is non-empty, readable text, and (when
    `min_tokens` is known) holds enough bytes for one window: a token covers at least one byte (+ a BOS)."""
    if not value:
        return
    p = Path(value).expanduser()
    if not p.is_file():
        raise ConfigError(field, value, "an existing local file", f"Point it at a local copy ({FORMATS}).")
    if not p.name.lower().endswith(SUFFIXES):
        raise ConfigError(field, value, f"a data file ({FORMATS})", "Its extension names the format.")
    if p.stat().st_size == 0:
        raise ConfigError(field, value, "a non-empty file", "The file is empty.")
    try:
        text = _text_head(p, field, value)
    except UnicodeDecodeError:
        raise ConfigError(field, value, f"a UTF-8 text file ({FORMATS})", "It is not valid UTF-8.") from None
    size = len(text.encode()) if text is not None else None     # a token covers at least one byte (+ BOS)
    if size is not None and min_tokens and size < HEAD and size + 1 < min_tokens:
        raise ConfigError(field, value, f"a text of at least one window ({min_tokens} tokens)",
                          f"Its {size} bytes cannot make {min_tokens} tokens.")
