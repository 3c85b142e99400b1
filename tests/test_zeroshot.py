"""Zero-shot evaluation through lm-eval: fidelity to lm-eval run directly, the BOS switch, config errors, record.

Each `simple_evaluate` costs seconds on the tiny model; the tests keep to few tasks and few calls.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, compose_run
from repro.config import ConfigError, ZeroShotConfig

FIXTURES = REPO / "repro" / "assets" / "lm_eval_tasks"
ALL_TASKS = ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "rte"]


def fixture_cfg(**kw) -> ZeroShotConfig:
    return ZeroShotConfig(**{"data_dir": str(FIXTURES), "batch_size": 4, **kw})


# ---------------------------------------------------------------- config and preflight errors (no lm-eval run)

def test_fixture_files_exist_in_original_schema():
    for task in ALL_TASKS:
        rows = [json.loads(line) for line in (FIXTURES / f"{task}.jsonl").read_text().splitlines()]
        assert len(rows) == 6
    arc = json.loads((FIXTURES / "arc_easy.jsonl").read_text().splitlines()[0])
    assert set(arc) == {"id", "question", "choices", "answerKey"} and set(arc["choices"]) == {"text", "label"}


def test_unknown_task_lists_available_ones():
    from repro.eval.zeroshot import check_zeroshot

    with pytest.raises(ConfigError) as e:
        check_zeroshot(fixture_cfg(tasks=["boolq", "hellaswagg"]))
    msg = str(e.value)
    assert "eval.zeroshot.tasks[1]" in msg and "'hellaswagg'" in msg
    assert all(t in msg for t in ALL_TASKS) and "include_path" in msg


def test_metric_the_task_does_not_produce():
    from repro.eval.zeroshot import check_zeroshot

    check_zeroshot(fixture_cfg(tasks=["hellaswag"], metrics={"hellaswag": "acc_norm"}))  # produced: fine
    with pytest.raises(ConfigError, match=r"eval.zeroshot.metrics.winogrande.*'acc_norm'.*produces: acc\.$"):
        check_zeroshot(fixture_cfg(tasks=["winogrande"], metrics={"winogrande": "acc_norm"}))
    with pytest.raises(ConfigError, match="eval.zeroshot.metric`"):
        check_zeroshot(fixture_cfg(tasks=["boolq"], metric="f1"))


def test_unreachable_data_names_the_local_option(tmp_path):
    from repro.eval.zeroshot import check_zeroshot

    # conftest sets HF_HUB_OFFLINE=1 and an empty HF_HOME: the hub dataset is not reachable.
    with pytest.raises(ConfigError, match=r"allenai/ai2_arc.*eval.zeroshot.data_dir=<dir with arc_easy.jsonl>"):
        check_zeroshot(ZeroShotConfig(tasks=["arc_easy"]))
    (tmp_path / "piqa.jsonl").write_text((FIXTURES / "piqa.jsonl").read_text())
    with pytest.raises(ConfigError, match=r"data_dir.*boolq.jsonl.*`validation` split of aps/super_glue"):
        check_zeroshot(ZeroShotConfig(tasks=["piqa", "boolq"], data_dir=str(tmp_path)))


CUSTOM_TASK = """task: my_piqa
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{[sol1, sol2]}}}}"
metric_list:
  - metric: acc
metadata:
  version: 3.0
"""


def test_custom_task_from_include_path(tiny_llama, tmp_path):
    from repro.eval.zeroshot import check_zeroshot, evaluate_zeroshot

    (tmp_path / "my_piqa.yaml").write_text(CUSTOM_TASK.format(data=FIXTURES / "piqa.jsonl"))
    cfg = ZeroShotConfig(tasks=["my_piqa"], include_path=str(tmp_path), limit=3, batch_size=4)
    check_zeroshot(cfg)
    with pytest.raises(ConfigError, match="acc_norm.*produces: acc"):
        check_zeroshot(dataclasses.replace(cfg, metric="acc_norm"))
    metrics, protocol = evaluate_zeroshot(*tiny_llama, cfg)
    assert protocol["tasks"]["my_piqa"]["version"] == 3.0 and protocol["limit"] == 3
    assert protocol["tasks"]["my_piqa"]["n_samples"] == {"original": 6, "effective": 3}
    assert metrics["mean"] == metrics["my_piqa"]
    (tmp_path / "my_piqa.yaml").write_text(CUSTOM_TASK.format(data=tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="missing.jsonl"):
        check_zeroshot(cfg)


def test_hub_cache_makes_a_task_reachable_offline_and_names_the_commit(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from repro.eval.zeroshot import check_zeroshot, hub_dataset_commit

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="piqa"):
        check_zeroshot(ZeroShotConfig(tasks=["piqa"]))
    repo = tmp_path / "datasets--baber--piqa"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd\n")
    check_zeroshot(ZeroShotConfig(tasks=["piqa"]))          # cached: no error although HF_HUB_OFFLINE=1
    assert hub_dataset_commit("baber/piqa") == "0123abcd"
    assert hub_dataset_commit("baber/piqa", "v2") is None and hub_dataset_commit("allenai/ai2_arc") is None


def test_typed_config_rejects_bad_keys_and_values():
    with pytest.raises(ConfigError, match="eval.zeroshot.taks"):
        compose_run("eval=zeroshot_fixtures", "+eval.zeroshot.taks=[piqa]")
    with pytest.raises(ConfigError, match="eval.zeroshot.batch_size"):
        compose_run("eval=zeroshot_fixtures", "eval.zeroshot.batch_size=0")
    run = compose_run("eval=zeroshot_rte")
    assert run.eval.zeroshot.tasks == ["boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                       "openbookqa"]
    assert run.eval.zeroshot.add_bos_token is False and run.eval.zeroshot.metric == "acc"


@pytest.mark.parametrize("name, has_rte", [("zeroshot", False), ("zeroshot_rte", True), ("zeroshot_neuronal", True),
                                            ("zeroshot_restorelcc", True), ("zeroshot_losa", False),
                                            ("zeroshot_lua_llm", False)])
def test_paper_task_sets_are_valid_and_runnable_offline(name, has_rte):
    from repro.eval.zeroshot import check_zeroshot

    zs = compose_run(f"eval={name}").eval.zeroshot
    assert len(zs.tasks) == 7 and ("rte" in zs.tasks) == has_rte and ("piqa" in zs.tasks) != has_rte
    assert zs.metric == "acc" and zs.num_fewshot == 0 and zs.add_bos_token is False
    check_zeroshot(dataclasses.replace(zs, data_dir=str(FIXTURES)))   # every task has fixture data


def test_bad_task_fails_before_the_model_is_loaded(results_dir):
    from repro.run import execute

    run = compose_run("env=offline", "model=tiny-llama", "score=magnitude", "eval=zeroshot_fixtures",
                      "eval.zeroshot.tasks=[piqa,mmlu]", f"paths.results={results_dir}")
    with pytest.raises(ConfigError, match="mmlu"):
        execute(run)
    assert not Path(results_dir).exists()   # preflight: nothing written, nothing loaded


# ---------------------------------------------------------------- fidelity: exactly lm-eval's own numbers

def _lm_eval_task_dir_with_local_data(dst: Path) -> Path:
    """lm-eval's own YAMLs for hellaswag, winogrande and arc_easy, with only the data location rewritten."""
    import lm_eval.tasks

    src = Path(lm_eval.tasks.__file__).parent
    for sub in ("hellaswag", "winogrande"):
        shutil.copytree(src / sub, dst / sub, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    (dst / "arc").mkdir()
    shutil.copy(src / "arc" / "arc_easy.yaml", dst / "arc" / "arc_easy.yaml")
    rewrites = {
        dst / "hellaswag" / "hellaswag.yaml": ("Rowan/hellaswag", None, "validation"),
        dst / "winogrande" / "default.yaml": ("allenai/winogrande", "winogrande_xl", "validation"),
        dst / "arc" / "arc_easy.yaml": ("allenai/ai2_arc", "ARC-Easy", "test"),
    }
    for path, (hub, name, split) in rewrites.items():
        task = {"hellaswag": "hellaswag", "winogrande": "winogrande", "arc": "arc_easy"}[path.parent.name]
        text = path.read_text().replace(
            f"dataset_path: {hub}",
            f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    {split}: {FIXTURES / (task + '.jsonl')}")
        text = text.replace(f"dataset_name: {name}", "dataset_name: null").replace("training_split: train",
                                                                                   "training_split: null")
        if split == "test":
            text = text.replace("validation_split: validation", "validation_split: null")
        path.write_text(text)
    return dst


def test_same_accuracy_as_lm_eval_run_directly(tiny_llama, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from repro.eval.zeroshot import evaluate_zeroshot

    model, tok = tiny_llama
    tasks = ["hellaswag", "winogrande", "arc_easy"]
    ours, protocol = evaluate_zeroshot(model, tok, fixture_cfg(tasks=tasks, metrics={"hellaswag": "acc_norm"}))

    saved = tmp_path / "model"
    model.save_pretrained(saved)
    tok.save_pretrained(saved)
    direct = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={saved},dtype=float32,add_bos_token=False", tasks=tasks,
        task_manager=TaskManager(include_path=str(_lm_eval_task_dir_with_local_data(tmp_path / "tasks")),
                                 include_defaults=False),
        num_fewshot=0, batch_size=4, device="cpu", log_samples=False)["results"]
    for task in tasks:
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in direct[task]:
                assert protocol["tasks"][task]["all_metrics"][metric] == direct[task][f"{metric},none"], (task, metric)
    assert ours["hellaswag"] == direct["hellaswag"]["acc_norm,none"]
    assert ours["winogrande"] == direct["winogrande"]["acc,none"]
    assert ours["mean"] == pytest.approx(sum(ours[t] for t in tasks) / 3)
    assert protocol["tasks"]["arc_easy"]["split"] == "test"
    assert protocol["tasks"]["arc_easy"]["n_samples"] == {"original": 6, "effective": 6}


# ---------------------------------------------------------------- the BOS switch reaches the model

def _bos_adding_byte_tokenizer():
    """The test byte tokenizer with a LLaMA-style post-processor that prepends <bos> (id 256)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from repro.models.tokenizers import _backend

    backend = Tokenizer.from_str(_backend().to_str())
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                           special_tokens=[("<bos>", 256)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def test_bos_switch_changes_the_tokens_the_model_sees(tiny_llama):
    from repro.eval.zeroshot import evaluate_zeroshot

    model, byte_tok = tiny_llama
    bos_tok = _bos_adding_byte_tokenizer()
    seen = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((kwargs.get("input_ids", args[0] if args else None)).clone()),
        with_kwargs=True)
    first_tokens, recorded = {}, {}
    try:
        for label, tok, bos in (("off", bos_tok, False), ("on", bos_tok, True), ("byte_on", byte_tok, True)):
            seen.clear()
            _, protocol = evaluate_zeroshot(model, tok, fixture_cfg(tasks=["boolq"], limit=2, add_bos_token=bos,
                                                                    batch_size=1))
            first_tokens[label] = {int(ids[0, 0]) for ids in seen}
            recorded[label] = (protocol["add_bos_token"], protocol["bos_in_inputs"])
    finally:
        hook.remove()
    assert first_tokens["on"] == {256}                      # every scored sequence starts with BOS
    assert 256 not in first_tokens["off"] and first_tokens["off"]
    assert 256 not in first_tokens["byte_on"]              # this tokenizer adds no BOS: lm-eval's switch is inert
    assert recorded == {"off": (False, False), "on": (True, True), "byte_on": (True, False)}


# ---------------------------------------------------------------- the run record

def test_run_records_per_task_accuracy_and_fingerprint(results_dir):
    from repro.run import execute

    run = compose_run("env=offline", "model=tiny-llama", "score=magnitude", "eval=zeroshot_fixtures",
                      "eval.ppl.max_windows=1", f"paths.results={results_dir}")
    record = execute(run)
    saved = json.loads((Path(record["run_dir"]) / "result.json").read_text())
    zs, proto = saved["metrics"]["zeroshot"], saved["protocol"]["zeroshot"]
    assert set(zs) == set(ALL_TASKS) | {"mean"}
    assert zs["mean"] == pytest.approx(sum(zs[t] for t in ALL_TASKS) / len(ALL_TASKS))
    assert all(0.0 <= zs[t] <= 1.0 for t in ALL_TASKS)
    assert "wikitext2" in saved["metrics"]["ppl"]
    assert proto["lm_eval_version"].startswith("0.4.") and proto["num_fewshot"] == 0
    assert proto["add_bos_token"] is False and proto["bos_in_inputs"] is False and proto["dtype"] == "float32"
    boolq = proto["tasks"]["boolq"]
    assert boolq["version"] == 2.0 and boolq["metric"] == "acc" and boolq["n_samples"]["effective"] == 6
    assert boolq["dataset"]["original_dataset"] == "aps/super_glue" and len(boolq["dataset"]["sha256"]) == 64
    # fixture data never shares an identity with the hub data
    hub = compose_run("env=offline", "model=tiny-llama", "score=magnitude", "eval=zeroshot_fixtures",
                      "eval.ppl.max_windows=1", "eval.zeroshot.data_dir=null")
    from repro.run import run_identity

    assert run_identity(hub) != saved["identity"]
    assert run_identity(dataclasses.replace(run, eval=dataclasses.replace(
        run.eval, zeroshot=dataclasses.replace(run.eval.zeroshot, batch_size=1)))) == saved["identity"]


@pytest.mark.slow
def test_smollm2_matches_lm_eval_with_its_own_task_files(smollm2, tmp_path):
    """The real 135M model and its GPT-2-style tokenizer: our task construction gives lm-eval's own numbers."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from repro.eval.zeroshot import evaluate_zeroshot

    model, tok = smollm2
    tasks = ["hellaswag"]   # process_docs, 4 choices, acc and acc_norm; the other tasks: the tiny-model test
    ours, protocol = evaluate_zeroshot(model, tok, fixture_cfg(tasks=tasks, batch_size=8))
    direct = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tok, batch_size=8, add_bos_token=False), tasks=tasks,
        task_manager=TaskManager(include_path=str(_lm_eval_task_dir_with_local_data(tmp_path)),
                                 include_defaults=False), num_fewshot=0, log_samples=False)["results"]
    for task in tasks:
        assert protocol["tasks"][task]["all_metrics"]["acc"] == direct[task]["acc,none"]
        assert protocol["tasks"][task]["all_metrics"]["acc_norm"] == direct[task]["acc_norm,none"]
        assert ours[task] == direct[task]["acc,none"]
    assert protocol["bos_in_inputs"] is False and protocol["tasks"]["hellaswag"]["n_samples"]["effective"] == 6
