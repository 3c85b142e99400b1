"""Instruction-tuning data for the recovery methods: the papers' protocols, from the hub or a local file.

    from repro.data.instruct import InstructDataConfig, load_instruction_data, check_instruction_data
    train, val = load_instruction_data(cfg, tokenizer)            # datasets.Dataset with input_ids/attention_mask/labels
    train, _ = load_instruction_data(cfg, tokenizer, rows="1000:2000")   # one of LoSA's per-round shards

Two loss formats (`format`):

- `text` — LoSA (wzhuang-xmu/LoSA main.py:177-195): `vicgalle/alpaca-gpt4`, the `text` column (the full Alpaca
  prompt, preamble included, followed by the response), causal-LM loss on **every** token, truncated at
  `max_length` (1024). The reference's tokenizer adds BOS and EOS and pads with EOS, so trl's collator masks the
  EOS label: `append_eos=True, eos_in_loss=False` reproduce that.
- `alpaca` — RestoreLCC (zijian678/restorelcc utils/dataloaders.py): prompt = `prompt_template` (or
  `prompt_template_no_input` when the row's `input` is empty) filled from `instruction` / `input`, completion =
  `" " + output`; the loss covers the completion only (the prompt, which ends with `response_marker`, gets label
  -100). RestoreLCC's prompt has no "Below is an instruction…" preamble, and no EOS is appended.

Rows: `rows="a:b"` takes rows [a, b) of the split in its original order (LoSA's shards `train[1000:2000]` … and
`train[4000:10000]`); then `subset` keeps the first N rows after a shuffle with `seed` (RestoreLCC's 2,000-sample
subset) and `val_fraction` splits them (RestoreLCC's 7:3 train/validation split). `path` is a hub dataset id or a
local .json/.jsonl/.parquet file.

Task rows (`task`: boolq | rte | arc_easy | arc_challenge; RestoreLCC Table 3's task-specific recovery, and any other
recovery that sets it): the task's training split from `repro.data.tasks` (lm-eval's prompt, completion = the gold
answer choice, e.g. " yes"), loss on the completion only (format=alpaca); `task_path` = a local file or directory
of `<task>.jsonl` in the hub schema (null = the hub dataset); `path` and the templates are not used. `rows` and
`subset` apply to the task rows.

Offline stand-in: `STANDIN` (repro/assets/instruct-standin.jsonl) is built by `python -m repro.data.instruct` from
the bundled WikiText-2 test *tail* (the calibration slice, disjoint from the bundled evaluation slice): each row asks
the model to continue a passage. It has the `text`, `instruction`, `input`, `output` fields of alpaca-gpt4, so both
formats run on it. It is NOT the papers' data; every config that uses it says so (conf/env/offline.yaml).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from repro.config import ConfigError, check_choice, check_range
from repro.data.sources import ASSETS, ROW_FILE_SUFFIXES, first_row

STANDIN = ASSETS / "instruct-standin.jsonl"
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n")
ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
                         "further context. Write a response that appropriately completes the request.\n\n")


@dataclass
class InstructDataConfig:
    path: str = "vicgalle/alpaca-gpt4"   # hub id or local .json/.jsonl/.parquet (LoSA main.py:177)
    revision: Optional[str] = None       # hub revision
    split: str = "train"
    format: str = "text"                 # text (full-sequence loss, LoSA) | alpaca (completion only, RestoreLCC)
    text_field: str = "text"             # format=text: the column trained on
    prompt_template: str = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    prompt_template_no_input: str = "### Instruction:\n{instruction}\n\n### Response:"   # RestoreLCC's prompts
    response_marker: str = "### Response:"
    rows: Optional[str] = None           # "a:b": rows [a, b) of the split, in order (LoSA's shards)
    subset: Optional[int] = None         # keep N rows after a seeded shuffle (RestoreLCC: 2000)
    val_fraction: float = 0.0            # held-out fraction of those rows (RestoreLCC: 0.3)
    seed: int = 42                       # shuffle seed (RestoreLCC: 42)
    max_length: int = 1024               # truncation in tokens (LoSA: 1024; RestoreLCC: 500)
    append_eos: bool = True              # LoSA's tokenizer adds EOS (add_eos_token=True)
    eos_in_loss: bool = False            # LoSA: pad = eos, so the collator masks the EOS label
    task: Optional[str] = None           # boolq | rte | arc_easy | arc_challenge (repro/data/tasks.py); None = `path`
    task_path: Optional[str] = None      # a task's local file or a directory of <task>.jsonl; None = the hub

    def __post_init__(self):
        from repro.data.tasks import TASKS

        check_choice("recovery.data.format", self.format, ("text", "alpaca"))
        if self.task is not None:
            check_choice("recovery.data.task", self.task, tuple(TASKS))
            if self.format != "alpaca":
                raise ConfigError("recovery.data.format", self.format,
                                  f"'alpaca' (completion-only loss) for the task rows of recovery.data.task={self.task}")
        check_range("recovery.data.max_length", self.max_length, lo=2)
        check_range("recovery.data.val_fraction", self.val_fraction, lo=0.0, hi=1.0, hi_open=True)
        if self.subset is not None:
            check_range("recovery.data.subset", self.subset, lo=1)
        if self.rows is not None:
            parse_rows(self.rows)
        if self.format == "alpaca":
            for name in ("prompt_template", "prompt_template_no_input"):
                if self.response_marker not in getattr(self, name):
                    raise ConfigError(f"recovery.data.{name}", getattr(self, name),
                                      f"a template containing the response marker {self.response_marker!r}")


def parse_rows(rows: str, field: str = "recovery.data.rows") -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(rows))
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(field, rows, "a row range 'start:end' with start < end (e.g. '1000:2000')")
    return int(m.group(1)), int(m.group(2))


def _is_local(path: str) -> bool:
    return Path(path).expanduser().suffix in ROW_FILE_SUFFIXES or Path(path).expanduser().exists()


def _needed_fields(cfg: InstructDataConfig) -> tuple:
    if cfg.task is not None:
        return ("prompt", "completion")
    return (cfg.text_field,) if cfg.format == "text" else ("instruction", "input", "output")


def check_instruction_data(cfg: InstructDataConfig, field: str = "recovery.data.path") -> None:
    """Preflight: a local file must exist, have a known suffix and the fields the format reads (first row)."""
    if cfg.task is not None:
        from repro.data.tasks import check_task_data
        return check_task_data(cfg.task, cfg.task_path, field.rsplit(".", 1)[0] + ".task_path")
    if not _is_local(cfg.path):
        return                                     # a hub id: checked when it is downloaded
    p = Path(cfg.path).expanduser()
    if not p.is_file():
        raise ConfigError(field, cfg.path, "an existing .json/.jsonl/.parquet file or a hub dataset id")
    if p.suffix not in ROW_FILE_SUFFIXES:
        raise ConfigError(field, cfg.path, "a .json, .jsonl or .parquet file")
    first = first_row(p)
    missing = [f for f in _needed_fields(cfg) if f not in first]
    if missing:
        raise ConfigError(field, cfg.path, f"rows with the fields {list(_needed_fields(cfg))} for "
                          f"recovery.data.format={cfg.format} (missing {missing}; found {sorted(first)})")


def load_rows(cfg: InstructDataConfig, rows: Optional[str] = None):
    """The raw rows (a datasets.Dataset), after `rows`, `subset`."""
    import datasets

    rows = rows if rows is not None else cfg.rows
    if cfg.task is not None:
        from repro.data.tasks import load_task_rows
        ds = load_task_rows(cfg.task, cfg.task_path, cfg.split)
    elif _is_local(cfg.path):
        kind = "parquet" if cfg.path.endswith(".parquet") else "json"
        ds = datasets.load_dataset(kind, data_files={"train": str(Path(cfg.path).expanduser())}, split="train")
    else:
        ds = datasets.load_dataset(cfg.path, split=cfg.split, revision=cfg.revision)
    missing = [f for f in _needed_fields(cfg) if f not in ds.column_names]
    if missing:
        raise ConfigError("recovery.data.path", cfg.path, f"rows with the fields {list(_needed_fields(cfg))} "
                          f"(missing {missing}; found {ds.column_names})")
    if rows is not None:
        a, b = parse_rows(rows)
        if b > len(ds):
            raise ConfigError("recovery.data.rows", rows, f"a range inside the {len(ds)} rows of "
                              f"{cfg.path if cfg.task is None else cfg.task + ' ' + str(cfg.task_path or 'hub')}")
        ds = ds.select(range(a, b))
    if cfg.subset is not None:
        ds = ds.shuffle(seed=cfg.seed).select(range(min(cfg.subset, len(ds))))
    return ds


def format_prompt(row: dict, cfg: InstructDataConfig) -> str:
    """format=alpaca: the prompt of a row (`prompt_template`, or `prompt_template_no_input` for an empty input;
    a task row's own `prompt`)."""
    if cfg.task is not None:
        return row["prompt"]
    template = cfg.prompt_template if str(row.get("input") or "").strip() else cfg.prompt_template_no_input
    return template.format(instruction=row["instruction"], input=row.get("input") or "")


def completion(row: dict, cfg: InstructDataConfig) -> str:
    """format=alpaca: the trained completion of a row (" " + output; a task row's gold choice, e.g. " yes")."""
    return row["completion"] if cfg.task is not None else " " + row["output"]


def tokenize_example(row: dict, cfg: InstructDataConfig, tokenizer) -> dict:
    """input_ids / attention_mask / labels of one row (labels -100 where no loss is taken)."""
    eos = tokenizer.eos_token_id
    if cfg.format == "text":
        ids = tokenizer(row[cfg.text_field], add_special_tokens=True)["input_ids"]
        ids = ids[:cfg.max_length - 1] if cfg.append_eos else ids[:cfg.max_length]
        labels = list(ids)
        if cfg.append_eos and eos is not None:
            ids = ids + [eos]
            labels = labels + [eos if cfg.eos_in_loss else -100]
    else:
        p_ids = tokenizer(format_prompt(row, cfg), add_special_tokens=True)["input_ids"]
        c_ids = tokenizer(completion(row, cfg), add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[:cfg.max_length]
        labels = ([-100] * len(p_ids) + c_ids)[:cfg.max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def load_instruction_data(cfg: InstructDataConfig, tokenizer, rows: Optional[str] = None):
    """(train, validation) tokenised datasets; validation is None when `val_fraction` is 0."""
    ds = load_rows(cfg, rows)
    cols = ds.column_names
    tok = ds.map(lambda r: tokenize_example(r, cfg, tokenizer), remove_columns=cols, desc="tokenize")
    tok = tok.filter(lambda r: any(x != -100 for x in r["labels"]))   # a truncated prompt leaves nothing to learn
    if cfg.val_fraction > 0:
        split = tok.train_test_split(test_size=cfg.val_fraction, seed=cfg.seed, shuffle=True)
        return split["train"], split["test"]
    return tok, None


def describe(cfg: InstructDataConfig, rows: Optional[str] = None) -> dict:
    """What the record says about the fine-tuning data."""
    local = _is_local(cfg.path)
    out = {"kind": "local" if local else "hub", "path": cfg.path, "format": cfg.format,
           "rows": rows if rows is not None else cfg.rows, "subset": cfg.subset, "val_fraction": cfg.val_fraction,
           "max_length": cfg.max_length}
    if cfg.task is not None:
        from repro.data.tasks import describe_task
        out.update({"kind": "task", "path": None, **describe_task(cfg.task, cfg.task_path)})
        return out
    if local and Path(cfg.path).expanduser().resolve() == STANDIN.resolve():
        out["standin"] = "offline stand-in built from the bundled WikiText-2 tail; not the papers' data"
    return out


def build_standin(out: Path = STANDIN, source: Path = ASSETS / "wikitext2-test-tail.txt", n: int = 400) -> int:
    """Write the offline stand-in: per usable WikiText row, 'continue this passage' (first 2 sentences → next 3)."""
    rows = []
    for line in source.read_text().splitlines():
        sents = [s.strip() for s in re.split(r"(?<=\.) ", line.strip()) if s.strip()]
        if len(sents) < 5 or line.lstrip().startswith("="):
            continue
        inp, outp = " ".join(sents[:2]), " ".join(sents[2:5])
        instr = "Continue the following passage from an encyclopedia article."
        text = f"{ALPACA_PREAMBLE_INPUT}### Instruction:\n{instr}\n\n### Input:\n{inp}\n\n### Response:\n{outp}"
        rows.append({"instruction": instr, "input": inp, "output": outp, "text": text})
        if len(rows) == n:
            break
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


if __name__ == "__main__":
    print(f"{build_standin()} rows -> {STANDIN}")
