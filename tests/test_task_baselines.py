"""RestoreLCC Table 3's baselines on a task's rows (`recovery.data.task`, repro/data/tasks.py): LoFiT and LoRA train on
the task's lm-eval prompt with the loss on the gold answer only, the task is part of the run identity, bad input is
refused before loading, and the Table 3 experiment files reuse the stored pruned models of table3 / table3_slimgpt."""
import json
from collections import Counter

import pytest

from conftest import compose_run
from repro.config import ConfigError
from repro.data.tasks import STANDIN_DIR

BASE = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "eval.ppl.max_windows=1",
        "recovery_budget.training.max_steps=2", "recovery_budget.data.max_length=400")
METHOD = {"lofit": ("recovery=lofit", "recovery.heads=0.25"),
          "lora": ("recovery=lora", "recovery.data.format=alpaca", "recovery.r=4"),
          "dora": ("recovery=dora", "recovery.data.format=alpaca", "recovery.r=4")}


def expected_pairs(task: str) -> Counter:
    """(prompt, answer) of every stand-in row, rendered here from the raw hub-schema JSON with lm-eval's prompts."""
    rows = [json.loads(line) for line in (STANDIN_DIR / f"{task}.jsonl").read_text().splitlines()]
    if task == "boolq":
        return Counter((f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", [" no", " yes"][r["label"]])
                       for r in rows)
    return Counter((f"Question: {r['question']}\nAnswer:",
                    " " + r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])].strip()) for r in rows)


@pytest.mark.parametrize("method, task, n_train", [("lofit", "boolq", 28), ("lora", "arc_challenge", 40)])
def test_baseline_trains_on_the_task_prompt_with_loss_on_the_answer(method, task, n_train, results_dir, monkeypatch):
    import importlib

    from repro.run import execute

    module = importlib.import_module(f"repro.recovery.{method}")
    real, seen = module.fine_tune, []

    def spy(model, tokenizer, train, *args, **kwargs):
        seen.append((tokenizer, train))
        return real(model, tokenizer, train, *args, **kwargs)

    monkeypatch.setattr(module, "fine_tune", spy)
    rec = execute(compose_run(*BASE, *METHOD[method], f"recovery.data.task={task}", f"paths.results={results_dir}"))
    assert rec["status"] == "ok", rec.get("error")
    data = rec["recovery"]["data"]
    assert data["kind"] == "task" and data["task"] == task and "standin" in data
    assert len(seen) == (2 if method == "lofit" else 1)          # LoFiT: head selection, then bias tuning
    want = expected_pairs(task)
    for tok, train in seen:
        assert len(train) == n_train            # env=offline rows 0:40 (lofit: 7:3 split)
        got = Counter()
        for ex in train:
            ids, labels = ex["input_ids"], ex["labels"]
            n_prompt = next(i for i, x in enumerate(labels) if x != -100)
            assert all(x == -100 for x in labels[:n_prompt]) and labels[n_prompt:] == ids[n_prompt:]
            got[(tok.decode(ids[:n_prompt], skip_special_tokens=True), tok.decode(ids[n_prompt:]))] += 1
        assert not got - want                   # every trained row is a distinct task row
        if task == "boolq":
            assert {a for _, a in got} == {" yes", " no"}


@pytest.mark.parametrize("method", ["lofit", "lora", "dora"])
def test_the_task_is_part_of_the_run_identity(method):
    from repro.stages import resolve

    runs = [resolve(compose_run(*BASE, *METHOD[method], *extra)) for extra in
            ((), ("recovery.data.task=boolq",), ("recovery.data.task=rte",),
             ("recovery.data.task=boolq", "recovery.data.subset=10"))]
    assert len({r.identity for r in runs}) == len({r.recover_id for r in runs}) == 4
    assert len({r.prune_id for r in runs}) == 1                  # the same stored pruned model
    assert runs[1].fields["recovery"]["data"]["task"] == "boolq"


@pytest.mark.parametrize("method, override, field", [
    ("lofit", "recovery.data.task=hellaswag", "recovery.data.task"),
    ("lora", "recovery.data.format=text", "recovery.data.format"),      # full-sequence loss cannot carry a task
    ("lofit", "recovery_budget.data.task_path=/nonexistent/boolq.jsonl", "recovery.data.task_path"),
    ("lofit", "+recovery.task=boolq", "recovery.task"),                 # RestoreLCC's spelling: not a LoFiT field
])
def test_bad_task_input_is_refused_before_loading(method, override, field):
    from repro.run import preflight

    with pytest.raises(ConfigError) as e:
        preflight(compose_run(*BASE, *METHOD[method], "recovery.data.task=boolq", override))
    assert e.value.field_name == field


@pytest.mark.parametrize("experiment, base", [("table3_lofit", "table3"), ("table3_lora", "table3"),
                                              ("table3_slimgpt_lofit", "table3_slimgpt"),
                                              ("table3_slimgpt_lora", "table3_slimgpt")])
def test_table3_baselines_reuse_the_stored_pruned_model(experiment, base):
    from repro.stages import resolve

    score = "slimgpt" if "slimgpt" in base else "wanda"
    pruned = resolve(compose_run("model=llama-7b", f"experiment=restorelcc/{base}", f"score={score}"))
    run = resolve(compose_run("model=llama-7b", f"experiment=restorelcc/{experiment}", f"score={score}",
                              "recovery.data.task=rte"))
    assert run.prune_id == pruned.prune_id and run.cfg.recovery.data.task == "rte"
    assert run.cfg.recovery.data.subset == 200 and run.cfg.recovery.data.format == "alpaca"
