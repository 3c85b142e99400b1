"""What a run record says of itself, read without a paper: its key fields in the reported tables' vocabulary (any
other `config.<path>` value: `repro.record.dotted_get(record, "config.<path>")`)."""
from __future__ import annotations


def record_key_fields(record: dict) -> dict:
    """The core key fields of a run record (its config), in the vocabulary of reported tables."""
    cfg = record.get("config", {})
    pattern = cfg.get("pattern", {}) or {}
    name = pattern.get("name", "unstructured")
    label = name if name in ("unstructured", "structured") else f"{pattern.get('n')}:{pattern.get('m')}"
    return {"model": cfg.get("model", {}).get("name"), "score": (cfg.get("score") or {}).get("name"),
            "allocation": (cfg.get("allocation") or {}).get("name", "uniform"),
            "recovery": (cfg.get("recovery") or {}).get("name", "none"), "pattern": label,
            "sparsity": cfg.get("sparsity")}


