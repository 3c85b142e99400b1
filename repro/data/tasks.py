"""Task-specific recovery data (RestoreLCC Table 3): BoolQ, RTE, ARC-Easy, ARC-Challenge training rows as
(prompt, completion) pairs, with every row's answer choices for the contrastive probes.

    ds = load_task_rows("boolq", path=None)       # datasets.Dataset: prompt, completion, choices, gold
    InstructDataConfig(task="boolq", format="alpaca", subset=200)   # the fine-tuning path (repro/data/instruct.py)

The reference (zijian678/restorelcc@b1a8e09) reads `processed_data/{task}_{n}/train.pt` (rows {text, label, [choices]})
that it does not ship; what it fixes is the targets — " yes"/" no" (utils/components.py `construct_boolq`),
" True"/" False" (`construct_rte`), " " + the stripped choice text (`construct_arc`) — and the loss mask after the
response template "\\nAnswer:" (RestoreLCC_train.py, trl DataCollatorForCompletionOnlyLM). Those targets and that
template are lm-eval's prompts for the same tasks (the harness it evaluates with), so the prompts here are lm-eval's
(`doc_to_text` of lm-eval 0.4's boolq / rte / arc_easy / arc_challenge, unchanged from the df3da98 fork):

| task | hub dataset (train split) | prompt | choices (gold) |
|---|---|---|---|
| boolq | `aps/super_glue` boolq | `{passage}\\nQuestion: {question}?\\nAnswer:` | " no", " yes" (label: 1 = yes) |
| rte | `nyu-mll/glue` rte | `{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:` | " True", " False" (label: 0 = entailment) |
| arc_easy / arc_challenge | `allenai/ai2_arc` ARC-Easy / ARC-Challenge | `Question: {question}\\nAnswer:` | " " + text.strip() (answerKey) |

Hub ids: the datasets lm-eval 0.4 scores these tasks on (validation / test splits), so training and evaluation rows
come from one source with one schema; `aps/super_glue` and `nyu-mll/glue` are parquet (datasets >= 4 runs no dataset
scripts). BoolQ could also come from `google/boolq` (same 9,427 train questions, `answer` bool instead of `label`).

Local data (`path`): a .json/.jsonl/.parquet file in the hub dataset's schema, or a directory holding `<task>.jsonl`
(e.g. `datasets.load_dataset("allenai/ai2_arc", "ARC-Easy", split="train").to_json("arc_easy.jsonl")`).

Offline stand-ins: `repro/assets/task_standins/<task>.jsonl`, SYNTHETIC rows in the hub schema written by
`python -m repro.data.tasks` from a small fact table (48 rows per task). Not the tasks' data and
not the bundled lm-eval fixtures (those are evaluation rows, 6 per task): they only let the code path run offline.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from repro.config import ConfigError
from repro.data.sources import ROW_FILE_SUFFIXES, first_row
from repro.data.sources import ASSETS

STANDIN_DIR = ASSETS / "task_standins"


@dataclass(frozen=True)
class TaskSpec:
    hub: str
    name: str
    fields: tuple                      # hub-schema fields a row needs
    convert: Callable[[dict], dict]    # hub row -> {prompt, choices, gold}


def _boolq(r: dict) -> dict:
    return {"prompt": f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", "choices": [" no", " yes"],
            "gold": int(r["label"])}


def _rte(r: dict) -> dict:
    return {"prompt": f"{r['sentence1']}\nQuestion: {r['sentence2']} True or False?\nAnswer:",
            "choices": [" True", " False"], "gold": int(r["label"])}


def _arc(r: dict) -> dict:
    ch = r["choices"]
    return {"prompt": f"Question: {r['question']}\nAnswer:", "choices": [" " + t.strip() for t in ch["text"]],
            "gold": list(ch["label"]).index(r["answerKey"])}


TASKS = {
    "boolq": TaskSpec("aps/super_glue", "boolq", ("passage", "question", "label"), _boolq),
    "rte": TaskSpec("nyu-mll/glue", "rte", ("sentence1", "sentence2", "label"), _rte),
    "arc_easy": TaskSpec("allenai/ai2_arc", "ARC-Easy", ("question", "choices", "answerKey"), _arc),
    "arc_challenge": TaskSpec("allenai/ai2_arc", "ARC-Challenge", ("question", "choices", "answerKey"), _arc),
}


def task_file(task: str, path: Optional[str]) -> Optional[Path]:
    """The local file of a task (`path` a file, or a directory with `<task>.jsonl`); None for the hub."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return p / f"{task}.jsonl" if p.is_dir() else p


def check_task_data(task: str, path: Optional[str], field: str) -> None:
    """Preflight: a local task file exists, has a known suffix and the hub schema's fields (first row)."""
    p = task_file(task, path)
    if p is None:
        return
    if not p.is_file() or p.suffix not in ROW_FILE_SUFFIXES:
        raise ConfigError(field, path, f"a .json/.jsonl/.parquet file in the {TASKS[task].hub} schema, or a "
                          f"directory holding {task}.jsonl (null = the hub dataset)")
    first = first_row(p)
    missing = [f for f in TASKS[task].fields if f not in first]
    if missing:
        raise ConfigError(field, path, f"{task} rows with the fields {list(TASKS[task].fields)} "
                          f"(missing {missing}; found {sorted(first)})")


def load_task_rows(task: str, path: Optional[str] = None, split: str = "train"):
    """The task's rows as a datasets.Dataset with prompt, completion (= the gold choice), choices, gold."""
    import datasets

    spec, p = TASKS[task], task_file(task, path)
    if p is not None:
        kind = "parquet" if p.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files={"train": str(p)}, split="train")
    else:
        try:
            ds = datasets.load_dataset(spec.hub, spec.name, split=split)
        except Exception as e:   # offline, firewall
            raise RuntimeError(f"Could not load {spec.hub} {spec.name} ({split}) from the hub: {e}. Offline? Set "
                               f"recovery.data.task_path to a local copy (a {task}.jsonl or its directory).") from e

    def convert(r):
        out = spec.convert(r)
        return {**out, "completion": out["choices"][out["gold"]]}

    return ds.map(convert, remove_columns=ds.column_names, desc=f"{task} rows")


def describe_task(task: str, path: Optional[str]) -> dict:
    p = task_file(task, path)
    if p is None:
        return {"task": task, "hub": TASKS[task].hub, "name": TASKS[task].name}
    out = {"task": task, "path": str(p)}
    if p.resolve().parent == STANDIN_DIR.resolve():
        out["standin"] = "synthetic offline stand-in rows (repro/data/tasks.py); not the task's training data"
    return out


# ---- offline stand-ins (python -m repro.data.tasks) -------------------------------------------------------------
_FACTS = {   # kind -> (entity, one descriptive sentence)
    "planet": [("Mars", "It is red and has two small moons."), ("Venus", "It is the hottest world near the Sun."),
               ("Jupiter", "It is the largest world of the Solar System."), ("Saturn", "It has wide bright rings.")],
    "fruit": [("an apple", "It grows on trees in cool orchards."), ("a banana", "It is long, curved and yellow."),
              ("a mango", "It is sweet with a large flat seed."), ("a cherry", "It is small, round and red.")],
    "mammal": [("a whale", "It lives in the sea and breathes air."), ("a horse", "It runs fast on four hooves."),
               ("a bat", "It flies at night and hangs upside down."), ("a tiger", "It has orange fur with stripes.")],
    "metal": [("iron", "It rusts when left in wet air."), ("copper", "It carries electricity in wires."),
              ("gold", "It is yellow and does not tarnish."), ("silver", "It is shiny and used in coins.")],
    "river": [("the Nile", "It flows north through Egypt."), ("the Amazon", "It crosses the largest rainforest."),
              ("the Danube", "It runs through Vienna and Budapest."), ("the Thames", "It flows through London.")],
    "musical instrument": [("a violin", "It is played with a bow."), ("a piano", "It has black and white keys."),
                           ("a trumpet", "It is a brass horn with three valves."),
                           ("a flute", "It is played by blowing across a hole.")],
}


def _standin_rows() -> dict:
    kinds = list(_FACTS)
    items = [(k, e, d) for k in kinds for e, d in _FACTS[k]]
    boolq, rte, easy, hard = [], [], [], []
    for i, (kind, ent, desc) in enumerate(items):
        other = kinds[(kinds.index(kind) + 1 + i % (len(kinds) - 1)) % len(kinds)]
        name = ent[0].upper() + ent[1:]
        passage = f"{name} is a {kind}. {desc}"
        for q_kind, label in ((kind, 1), (other, 0)):
            boolq.append({"question": f"is {ent} a {q_kind}", "passage": passage, "idx": len(boolq), "label": label})
        for h_kind, label in ((kind, 0), (other, 1)):
            rte.append({"sentence1": passage, "sentence2": f"{name} is a {h_kind}.", "label": label, "idx": len(rte)})
        for v in (0, 1):                  # two ARC questions per fact, other distractors and gold position
            wrong = [items[(i + 4 * j + 1 + 2 * v) % len(items)][1] for j in range(1, 4)]
            gold = (i + v) % 4
            choices = {"text": wrong[:gold] + [ent] + wrong[gold:], "label": list("ABCD")}
            easy.append({"id": f"standin-e{len(easy)}", "question": f"Which of these is a {kind}?",
                         "choices": choices, "answerKey": "ABCD"[gold]})
            hard.append({"id": f"standin-c{len(hard)}", "question": f"{desc.replace('It ', 'Which one ', 1)[:-1]}?",
                         "choices": choices, "answerKey": "ABCD"[gold]})
    return {"boolq": boolq, "rte": rte, "arc_easy": easy, "arc_challenge": hard}


def build_standins(out: Path = STANDIN_DIR) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for task, rows in _standin_rows().items():
        (out / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        counts[task] = len(rows)
    return counts


if __name__ == "__main__":
    print(build_standins(), "->", STANDIN_DIR)
