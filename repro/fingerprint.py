"""Content fingerprints of a run's local inputs (model files, calibration and evaluation texts).

A run's identity includes the SHA-256 of every local file that can change its numbers, so pointing a run at
another checkpoint or text never returns the old result, while a file moved unchanged keeps its identity (the
hash is over content and relative names, never over the absolute path). Hashing is cached by
(absolute path, size, mtime_ns) in `<cache>/repro/fingerprints.json`, so a second run pays one `stat` per file.
A path that is not a local file or directory (a hub id, `gguf:<package>`) has no fingerprint: the run stays
identified by its name (and revision), as before.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

_CHUNK = 1 << 20


def cache_file() -> Path:
    root = os.environ.get("REPRO_FINGERPRINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "repro", "fingerprints.json")
    return Path(root)


def _load_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict) -> None:
    from repro.record import write_json_atomic

    try:
        write_json_atomic(cache_file(), cache)
    except OSError:            # a read-only home only costs a re-hash next time
        pass


def _file_hash(path: Path, cache: dict) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        cache[key] = h.hexdigest()
    return cache[key]


def fingerprint(path: str | os.PathLike, cache: Optional[dict] = None) -> Optional[str]:
    """sha256 (16 hex) of a local file, or of a directory's files (relative names + contents); None if not local."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        return None
    own = cache is None
    cache = _load_cache() if own else cache
    known = len(cache)
    if p.is_file():
        digest = _file_hash(p, cache)
    else:
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
            h.update(f"{f.relative_to(p).as_posix()}\0{_file_hash(f, cache)}\n".encode())
        digest = h.hexdigest()
    if own and len(cache) != known:
        _save_cache(cache)
    return digest[:16]


def input_fingerprints(plain_cfg: dict) -> dict:
    """{override name: fingerprint} of every local input named by a resolved run config."""
    candidates = {}
    model = plain_cfg.get("model") or {}
    if model.get("path") and not model.get("random_init"):
        path = str(model["path"])
        if model.get("gguf_file") and Path(os.path.expanduser(path)).is_dir():
            path = os.path.join(path, model["gguf_file"])
        candidates["model.path"] = path
    calib = plain_cfg.get("calib") or {}
    if calib.get("local_path"):
        candidates["calib.local_path"] = calib["local_path"]
    for name, node in (plain_cfg.get("data") or {}).items():
        if isinstance(node, dict) and node.get("local_path"):
            candidates[f"data.{name}.local_path"] = node["local_path"]
    rdata = (plain_cfg.get("recovery") or {}).get("data") or {}
    for field in ("path", "task_path"):              # a hub id (tatsu-lab/alpaca) is not local: it stays as written
        if isinstance(rdata, dict) and rdata.get(field):
            candidates[f"recovery.data.{field}"] = rdata[field]
    cache = _load_cache()
    known = len(cache)
    out = {k: fp for k, v in candidates.items() if (fp := fingerprint(v, cache)) is not None}
    if len(cache) != known:
        _save_cache(cache)
    return out
