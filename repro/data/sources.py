"""Raw text sources: each dataset from the hub through `datasets`, or from a local file.

Hub defaults are the ones the reference code uses (research note baselines_neuronal.md §a). A local file may be
`.txt` (one dataset row per line, as the hub split's rows), `.json` / `.jsonl` / `.json.gz` (rows with the
dataset's text column) or `.parquet`. `datasets` loads every local file too, so the Arrow cache and the row order
are the same code path as the hub's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from repro.config import ConfigError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
ROW_FILE_SUFFIXES = (".json", ".jsonl", ".parquet")      # local files of records (instruction and task rows)


@dataclass(frozen=True)
class HubSource:
    path: str
    name: Optional[str]
    split: str
    column: str
    data_files: Optional[dict] = None
    # Script-only hub datasets (ptb_text_only) cannot load with `datasets` >= 4 (scripts removed): their parquet
    # conversion (the hub's `refs/convert/parquet` branch) is read instead — same rows, same order.
    parquet: Optional[dict] = None
    # Rows whose text spans several columns (GSM8K's question + answer): `template.format(**row)` is the row text.
    template: Optional[str] = None


HUB = {
    "wikitext2_test": HubSource("wikitext", "wikitext-2-raw-v1", "test", "text"),
    "wikitext2_train": HubSource("wikitext", "wikitext-2-raw-v1", "train", "text"),
    "wikitext103_train": HubSource("wikitext", "wikitext-103-raw-v1", "train", "text"),   # Lua-LLM's code
    "c4_train": HubSource("allenai/c4", None, "train", "text",
                          {"train": "en/c4-train.00000-of-01024.json.gz"}),
    "c4_validation": HubSource("allenai/c4", None, "validation", "text",
                               {"validation": "en/c4-validation.00000-of-00008.json.gz"}),
    "ptb_test": HubSource("ptb_text_only", "penn_treebank", "test", "sentence", parquet={
        "test": "hf://datasets/ptb-text-only/ptb_text_only@refs%2Fconvert%2Fparquet/penn_treebank/test/*.parquet"}),
    # Multi-objective domains (repro/data/domains.py). The code sets have only a train split: 90% / 10%.
    "gsm8k_train": HubSource("openai/gsm8k", "main", "train", "question", template="{question}\n{answer}"),
    "gsm8k_test": HubSource("openai/gsm8k", "main", "test", "question", template="{question}\n{answer}"),
    "code_train": HubSource("iamtarun/python_code_instructions_18k_alpaca", None, "train[:90%]", "prompt"),
    "code_test": HubSource("iamtarun/python_code_instructions_18k_alpaca", None, "train[90%:]", "prompt"),
    "code_alpaca_train": HubSource("sahil2801/CodeAlpaca-20k", None, "train[:90%]", "instruction",
                                   template="{instruction}\n{input}\n{output}"),
    "code_alpaca_test": HubSource("sahil2801/CodeAlpaca-20k", None, "train[90%:]", "instruction",
                                  template="{instruction}\n{input}\n{output}"),
}


def describe_source(key: str, local_path: Optional[str], hub_path: Optional[str] = None,
                    revision: Optional[str] = None) -> dict:
    """What the protocol fingerprint records about where rows came from."""
    if local_path:
        p = Path(local_path).expanduser()
        return {"kind": "local", "path": str(p), "bytes": p.stat().st_size if p.exists() else None}
    h = HUB[key]
    if _use_parquet(h, hub_path):
        return {"kind": "hub", "path": h.path, "name": h.name, "split": h.split, "data_files": h.parquet,
                "revision": None, "via": "parquet conversion (datasets >= 4 runs no dataset scripts)"}
    return {"kind": "hub", "path": hub_path or h.path, "name": h.name, "split": h.split,
            "data_files": h.data_files, "revision": revision}


def _use_parquet(h: HubSource, hub_path: Optional[str]) -> bool:
    import datasets

    return h.parquet is not None and hub_path is None and int(datasets.__version__.split(".")[0]) >= 4


def first_row(p: Path) -> dict:
    """The first record of a local .json (a list or one object), .jsonl or .parquet file, read cheaply."""
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(p).slice(0, 1).to_pylist()[0]
    text = p.read_text()
    if p.suffix == ".jsonl":
        return json.loads(text.splitlines()[0])
    data = json.loads(text)
    return data[0] if isinstance(data, list) else data


def check_local(field: str, local_path: Optional[str]) -> None:
    if local_path and not Path(local_path).expanduser().exists():
        raise ConfigError(field, local_path, "an existing local file",
                          "Point it at a local copy of the dataset (.txt with one row per line, .jsonl, "
                          ".json.gz or .parquet).")


def load_rows(key: str, local_path: Optional[str] = None, hub_path: Optional[str] = None,
              revision: Optional[str] = None, limit: Optional[int] = None) -> List[str]:
    """The text rows of one dataset split, in the dataset's original order."""
    import datasets

    h = HUB[key]
    if local_path:
        p = Path(local_path).expanduser()
        suffixes = "".join(p.suffixes[-2:])
        if p.suffix == ".txt":
            ds = datasets.load_dataset("text", data_files={"rows": str(p)}, split="rows")
            column = "text"
        elif p.suffix == ".parquet":
            ds = datasets.load_dataset("parquet", data_files={"rows": str(p)}, split="rows")
            column = h.column
        elif p.suffix in (".json", ".jsonl") or suffixes.endswith(".json.gz"):
            ds = datasets.load_dataset("json", data_files={"rows": str(p)}, split="rows")
            column = h.column
        else:
            raise ConfigError(f"data.{key}.local_path", local_path, "a .txt, .json, .jsonl, .json.gz or .parquet file")
        needed = _template_fields(h) if h.template and p.suffix != ".txt" else [column]
        if any(c not in ds.column_names for c in needed):
            raise ConfigError(f"data.{key}.local_path", local_path,
                              f"rows with the field(s) {needed} (found {ds.column_names})")
    else:
        try:
            if _use_parquet(h, hub_path):
                ds = datasets.load_dataset("parquet", data_files=h.parquet, split=h.split)
            else:
                kwargs = dict(split=h.split, revision=revision)
                if h.data_files:
                    kwargs["data_files"] = h.data_files
                ds = datasets.load_dataset(hub_path or h.path, h.name, **kwargs)
        except Exception as e:  # offline, removed script datasets (ptb), renamed configs...
            raise RuntimeError(f"Could not load `{hub_path or h.path}` ({h.split}) from the hub: {e}. Offline or "
                               f"behind a firewall? Download it once and set the dataset's `local_path` "
                               f"(e.g. `data.wikitext2.local_path=...` or `calib.local_path=...`).") from e
        column = h.column
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if h.template and column != "text":
        fields = _template_fields(h)
        return [h.template.format(**{f: row[f] for f in fields}) for row in ds]
    return list(ds[column])


def _template_fields(h: HubSource) -> list:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(h.template) if f]
