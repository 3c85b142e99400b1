"""The run record (`result.json`): identity, atomic writes, versions. Schema: docs/record.md.

Identity = SHA-256 over the canonical JSON of the config fields that change numbers, plus `inputs`: the content
fingerprint of every local input file (model weights/config, calibration and evaluation texts; repro/fingerprint.py)
keyed by its override name, so another checkpoint or text is another run and a moved-unchanged file is the same.
Excluded (they do not change a number, or only where they should not): output paths, the paths themselves of
local inputs (their content is in `inputs`), the model's `path` of a hub id (`model.name` names the weights), device,
evaluation batch sizes (results do not depend on them beyond float noise; the calibration batch size does
change pruned weights and stays in), offloading,
logging, `force`, and the experiment label (two papers' sweeps share their common baselines).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 2      # 2: stage identities (`prune_id`, `recover_id`), `pruned_model`, `inputs` in identity_fields
RECORD_FILE = "result.json"

NON_IDENTITY_KEYS = (
    "paths", "logger", "force", "experiment", "resources",
    "model.path", "model.gguf_file", "model.tokenizer", "model.device",
    "model.gpus",                        # how many GPUs a launcher leases to one job (repro/runner)
    "calib.local_path",
    # calib.batch_size stays IN the identity (of calibrating methods): on SmolLM2 SparseGPT 50% it moves wikitext2
    # ppl by 1.0% between batch 1 and 8 (fp32 statistics) and still 0.13% with float64 statistics, because the
    # block forward itself is batched differently — so float64 accumulation alone cannot make it irrelevant.
    "data.wikitext2.local_path", "data.c4.local_path", "data.ptb.local_path", "data.local_text.local_path",
    "eval.ppl.batch_size", "engine.offload", "engine.device",
    "eval.zeroshot.batch_size", "eval.zeroshot.include_path", "eval.speed",
    # eval.zeroshot.data_dir stays IN the identity: fixture or partial local data must never share a run (and a
    # collector cell) with the hub data; the price is that the same data in two directories gives two runs.
)


def dotted_get(node, dotted: str):
    """d['a']['b'] for 'a.b'; None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def dotted_set(d: dict, dotted: str, value) -> None:
    """d['a']['b'] = value for 'a.b', creating missing parents."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[leaf] = value


def _parent(d: dict, dotted: str) -> tuple:
    """(the dict holding the leaf of 'a.b.c', or None; 'c')."""
    parent, _, leaf = dotted.rpartition(".")
    node = dotted_get(d, parent) if parent else d
    return (node if isinstance(node, dict) else None), leaf


def dotted_has(d: dict, dotted: str) -> bool:
    """Whether 'a.b' is present in d (even with the value None)."""
    node, leaf = _parent(d, dotted)
    return node is not None and leaf in node


def _drop(d: dict, dotted: str) -> None:
    node, leaf = _parent(d, dotted)
    if node is not None:
        node.pop(leaf, None)


def flatten(node, prefix: str = "", sep: str = ".") -> dict:
    """{'ppl': {'wikitext2': 36.5}} -> {'ppl.wikitext2': 36.5}: every leaf under its joined path (one helper for the
    collector and the logger mirror)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{sep}{key}" if prefix else str(key), sep))
    return out


def identity_fields(plain_cfg: dict, dense: bool = False, needs_calib: bool = True,
                    inputs: Optional[dict] = None) -> dict:
    """The config fields that define the experiment. A dense run ignores every pruning field (so all papers share
    one dense run per model and protocol); a method without calibration ignores `calib`. `inputs` are the content
    fingerprints of local input files ({override name: hash}, repro.fingerprint.input_fingerprints)."""
    cfg = json.loads(json.dumps(plain_cfg, default=str))
    inputs = {k: v for k, v in (inputs or {}).items()
              if not (k.startswith("calib.") and (dense or not needs_calib))}
    if inputs:
        cfg["inputs"] = dict(sorted(inputs.items()))
    for key in (*NON_IDENTITY_KEYS, *inputs):      # a local input counts by its content, not where it lies
        _drop(cfg, key)
    if cfg.get("objectives", 0) is None:     # single-objective runs keep the identities they had before the field
        cfg.pop("objectives")
    if dense:
        for key in ("calib", "engine", "allocation", "recovery", "pattern", "sparsity"):
            cfg.pop(key, None)
    elif not needs_calib:
        cfg.pop("calib", None)
    return cfg


def identity(plain_cfg: dict, dense: bool = False, needs_calib: bool = True, inputs: Optional[dict] = None) -> str:
    return identity_of_fields(identity_fields(plain_cfg, dense=dense, needs_calib=needs_calib, inputs=inputs))


def identity_of_fields(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def hydra_overrides() -> Optional[list]:
    """The command-line overrides of the running Hydra job (`repro run <these>` composes the same config, with
    today's conf/); None outside a Hydra job (execute() called from Python)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None
    except Exception:  # noqa: BLE001 — provenance only: never fail a run over it
        return None


def skeleton(run, status: str, started_at: Optional[str] = None, overrides: Optional[list] = None) -> dict:
    """The record every writer starts from (repro/run.py, repro/runner/failures.py); `run`: a resolved
    repro.stages.Run; `overrides`: the job's command-line overrides (default: the running Hydra job's)."""
    from repro.config import to_plain

    return {"schema_version": SCHEMA_VERSION, "identity": run.identity, "status": status,
            "overrides": hydra_overrides() if overrides is None else list(overrides),
            "run_dir": str(run.run_dir()), "config": to_plain(run.cfg), "identity_fields": run.fields,
            "prune_id": run.prune_id, "recover_id": run.recover_id, "pruned_model": None,
            "started_at": started_at or now(), "versions": versions(), "runtime": runtime(), "metrics": {},
            "protocol": {}, "timings": {}}


def run_dir(results: str | Path, ident: str) -> Path:
    return Path(results) / "runs" / ident


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)      # mkstemp makes 0600; records are shared with the team (cluster storage)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


LOCK_FILE = ".lock"


def identity_lock(run_dir: Path, timeout: float = -1):
    """An inter-process lock on one identity (flock on `<run_dir>/.lock`, released by the OS if the holder dies):
    two sweeps that share a run compute it once. `timeout=-1` waits; `timeout=0` raises filelock.Timeout at once."""
    from filelock import FileLock

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(run_dir) / LOCK_FILE), timeout=timeout)


def identity_locked(run_dir: Path) -> bool:
    """True while another process holds the identity's lock (a run of it is in progress)."""
    from filelock import FileLock, Timeout

    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    try:
        with FileLock(str(path), timeout=0):
            return False
    except Timeout:
        return True


def read_record(path: Path) -> Optional[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version(), "repro": None, "git_commit": git_commit()}
    for pkg in ("repro", "torch", "transformers", "datasets", "lm_eval", "hydra-core", "accelerate"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def runtime() -> dict:
    """How the numbers were computed, outside the identity: CPU reductions (MKL/OpenMP) split by thread count, so
    e.g. SparseGPT's fp32 Hessians and hence its near-tie masks depend on it (SmolLM2 50 %: WikiText-2 69.42 at
    1 thread, 68.84 at 2; experiments/wanda/NOTES.md)."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def peak_memory() -> dict:
    import resource

    import torch

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mem = {"peak_rss_gib": rss_kib / 2**20}
    if torch.cuda.is_available():
        mem["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return mem
