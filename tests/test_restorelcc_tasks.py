"""RestoreLCC task-specific recovery (Table 3; repro/data/tasks.py): lm-eval's prompts and targets per task, the
contrastive negatives (BoolQ/RTE label swap, ARC the most similar other choice), the completion-only loss mask, a
tiny end-to-end run, and the preflight errors."""
import json
from pathlib import Path

import pytest

from conftest import compose_run
from repro.config import ConfigError
from repro.data.instruct import InstructDataConfig, load_rows, tokenize_example
from repro.data.tasks import STANDIN_DIR, TASKS, load_task_rows

TINY = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=restorelcc",
        "recovery.top_heads=4", "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=2",
        "recovery_budget.data.max_length=400", "recovery_budget.data.rows=0:16")
FIXTURES = Path(__file__).resolve().parents[1] / "repro" / "assets" / "lm_eval_tasks"
LM_EVAL_YAML = {"boolq": "super_glue/boolq/default.yaml", "rte": "glue/rte/default.yaml",
                "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_easy.yaml"}   # arc_challenge includes it


@pytest.mark.parametrize("task", sorted(TASKS))
def test_prompts_and_targets_are_lm_eval_s(task):
    """Prompt = lm-eval's doc_to_text rendered by jinja2 from the installed task YAML; target = " " + lm-eval's gold
    choice (the reference's " yes"/" no", " True"/" False", " " + choice text)."""
    import jinja2
    import lm_eval
    import yaml

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / LM_EVAL_YAML[task]).read_text())
    template = jinja2.Template(spec["doc_to_text"])
    # the bundled lm-eval fixtures are rows in the hub schema (evaluation rows: used here only as schema examples)
    ds = load_task_rows(task, str(FIXTURES / f"{task}.jsonl"))
    hub_rows = [json.loads(x) for x in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]
    for row, hub in zip(ds, hub_rows):
        assert row["prompt"] == template.render(**hub) and row["prompt"].endswith("\nAnswer:")
        if task in ("boolq", "rte"):
            want = {"boolq": ["no", "yes"], "rte": ["True", "False"]}[task][hub["label"]]
        else:
            want = hub["choices"]["text"][hub["choices"]["label"].index(hub["answerKey"])].strip()
        assert row["completion"] == " " + want == row["choices"][row["gold"]]


def test_completion_only_loss_masks_the_prompt(tiny_llama):
    tok = tiny_llama[1]
    cfg = InstructDataConfig(format="alpaca", task="boolq", task_path=str(STANDIN_DIR), max_length=512)
    row = load_rows(cfg)[0]
    ex = tokenize_example(row, cfg, tok)
    n_prompt = len(tok(row["prompt"])["input_ids"])
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:] == tok(row["completion"], add_special_tokens=False)[
        "input_ids"]
    assert tok.decode(ex["labels"][n_prompt:]) == row["completion"] in (" yes", " no")


@pytest.mark.parametrize("task, answers", [("boolq", {" yes", " no"}), ("rte", {" True", " False"})])
def test_label_swap_negatives_keep_each_prompt_with_its_pair(task, answers):
    from repro.recovery.lcc_probe import probe_pairs

    cfg = compose_run(*TINY, f"recovery.task={task}").recovery
    rows = list(load_task_rows(task, str(STANDIN_DIR)))[:12]
    prompts, pos, neg, rep = probe_pairs(rows, cfg)
    assert rep["negative_rule"] == "label swap" and "standin" not in rep and len(pos) == len(neg) == 12
    for p, a, b, r in zip(prompts, pos, neg, rows):
        assert a.startswith(p) and b.startswith(p)
        assert a[len(p):] == r["completion"] and {a[len(p):], b[len(p):]} == answers


def test_arc_negative_is_the_most_similar_other_choice():
    from repro.recovery.lcc_probe import probe_pairs

    cfg = compose_run(*TINY, "recovery.task=arc_easy").recovery
    rows = [{"prompt": "Question: q0\nAnswer:", "choices": [" a red apple", " a blue car", " a red apple pie", " ice"],
             "gold": 0, "completion": " a red apple"},
            {"prompt": "Question: q1\nAnswer:", "choices": [" dry sand", " wet sand", " rain"], "gold": 2,
             "completion": " rain"}]
    prompts, pos, neg, rep = probe_pairs(rows, cfg)
    assert rep["negative_rule"] == "the most similar other choice" and rep["negatives"] == "lexical"
    assert neg[0] == prompts[0] + " a red apple pie"          # shares most words with the gold choice
    assert neg[1] != pos[1] and neg[1][len(prompts[1]):] in (" dry sand", " wet sand")
    for r in load_task_rows("arc_challenge", str(STANDIN_DIR)):   # every stand-in row: a different choice
        _, p, n, _ = probe_pairs([r], cfg)
        assert n[0] != p[0] and n[0][len(r["prompt"]):] in r["choices"]


def test_tiny_boolq_recovery_runs_on_the_stand_in(results_dir):
    from repro.run import execute

    rec = execute(compose_run(*TINY, "recovery.task=boolq", f"paths.results={results_dir}"))
    r = rec["recovery"]
    assert rec["status"] == "ok" and r["task"] == "boolq" and r["training"]["steps"] == 2
    assert r["data"]["task"] == "boolq" and "standin" in r["data"] and r["data"]["subset"] == 200
    assert r["probe"]["negative_rule"] == "label swap" and r["probe"]["pairs"] == 16
    assert rec["sparsity_after_recovery"]["overall"] == rec["sparsity"]["overall"]


def test_task_changes_the_probe_cache_key():
    from repro.recovery.lcc_probe import probe_key

    keys = {probe_key("p", compose_run(*TINY, f"recovery.task={t}").recovery) for t in ("alpaca", "boolq", "rte")}
    keys.add(probe_key("p", compose_run(*TINY, "recovery.task=boolq", "recovery.task_samples=100").recovery))
    assert len(keys) == 4


@pytest.mark.parametrize("override, field", [
    ("recovery.task=hellaswag", "recovery.task"),
    ("recovery.task_samples=2", "recovery.task_samples"),
    ("+recovery.data.task=boolq", "recovery.data.task"),
    ("recovery_budget.data.task_path=/nonexistent/boolq.jsonl", "recovery.data.task_path"),
])
def test_bad_task_input_is_refused_before_loading(override, field):
    from repro.run import preflight
    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*TINY, "recovery.task=boolq", override))
    assert e.value.field_name == field
    if field == "recovery.task":
        assert all(t in str(e.value) for t in ("alpaca", "boolq", "rte", "arc_easy", "arc_challenge"))


def test_a_task_file_without_the_hub_fields_is_named(tmp_path):
    from repro.data.instruct import check_instruction_data
    bad = tmp_path / "boolq.jsonl"
    bad.write_text(json.dumps({"question": "is it", "answer": True}) + "\n")
    with pytest.raises(ConfigError, match=r"recovery.data.task_path.*missing \['passage', 'label'\]"):
        check_instruction_data(InstructDataConfig(format="alpaca", task="boolq", task_path=str(tmp_path)))
    with pytest.raises(ConfigError, match="recovery.data.format"):
        InstructDataConfig(format="text", task="rte")
