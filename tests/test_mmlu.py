"""MMLU 5-shot (Lua-LLM Table 13) through lm-eval: same value as lm-eval's own group aggregation, subject errors."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, compose_run
from repro.config import ConfigError, ZeroShotConfig

FIXTURES = REPO / "repro" / "assets" / "lm_eval_tasks"
SUBJECTS = ["elementary_mathematics", "high_school_geography"]


def _cfg(**kw) -> ZeroShotConfig:
    return ZeroShotConfig(**{"tasks": ["mmlu"], "num_fewshot": 5, "data_dir": str(FIXTURES), "batch_size": 4,
                             "mmlu_subjects": SUBJECTS, **kw})


def test_fixture_schema_is_cais_mmlu():
    for subject in SUBJECTS:
        for split in ("test", "dev"):
            rows = [json.loads(x) for x in (FIXTURES / "mmlu" / subject / f"{split}.jsonl").read_text().splitlines()]
            assert rows and all(set(r) == {"question", "subject", "choices", "answer"} for r in rows)
            assert all(len(r["choices"]) == 4 and r["answer"] in range(4) for r in rows)


def test_unknown_subject_is_a_config_error_listing_valid_ones():
    from repro.eval.zeroshot import check_zeroshot

    with pytest.raises(ConfigError) as e:
        check_zeroshot(_cfg(mmlu_subjects=["high_school_geography", "astrologyy"]))
    msg = str(e.value)
    assert "eval.zeroshot.mmlu_subjects[1]" in msg and "'astrologyy'" in msg and "abstract_algebra" in msg
    assert "world_religions" in msg


def test_missing_local_subject_and_wrong_metric():
    from repro.eval.zeroshot import check_zeroshot

    with pytest.raises(ConfigError, match=r"mmlu/anatomy/test.jsonl"):
        check_zeroshot(_cfg(mmlu_subjects=["anatomy"]))
    with pytest.raises(ConfigError, match="eval.zeroshot.metrics.mmlu"):
        check_zeroshot(_cfg(metrics={"mmlu": "acc_norm"}))
    with pytest.raises(ConfigError, match="eval.zeroshot.mmlu_subjects"):
        check_zeroshot(ZeroShotConfig(tasks=["boolq"], mmlu_subjects=SUBJECTS, data_dir=str(FIXTURES)))


def test_eval_configs_compose():
    run = compose_run("env=offline", "model=tiny-llama", "eval=mmlu_fixtures")
    assert run.eval.zeroshot.tasks == ["mmlu"] and run.eval.zeroshot.num_fewshot == 5
    assert compose_run("eval=mmlu").eval.zeroshot.mmlu_subjects is None


def test_same_value_as_lm_eval_group_aggregation(tiny_llama, tmp_path):
    """Our sample-weighted mean over subjects == lm-eval's own group (weight_by_size) on the same 5-shot tasks."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from repro.eval.zeroshot import _lm_eval_tasks_dir, _load_task_yaml, evaluate_zeroshot

    model, tok = tiny_llama
    ours, protocol = evaluate_zeroshot(model, tok, _cfg())
    row = protocol["tasks"]["mmlu"]
    assert row["n_samples"] == 9 and row["fewshot_split"] == "dev" and protocol["num_fewshot"] == 5

    names = []
    for subject in SUBJECTS:          # lm-eval's own task file, only the data location changed
        spec = _load_task_yaml(_lm_eval_tasks_dir() / "mmlu/default" / f"mmlu_{subject}.yaml", False)
        spec.pop("tag", None)
        spec.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {
            s: str(FIXTURES / "mmlu" / subject / f"{s}.jsonl") for s in ("test", "dev")}})
        (tmp_path / f"{subject}.yaml").write_text(yaml.safe_dump(spec))
        names.append(spec["task"])
    (tmp_path / "group.yaml").write_text(yaml.safe_dump({"group": "mmlu_fx", "task": names, "aggregate_metric_list": [
        {"metric": "acc", "weight_by_size": True}]}))
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, add_bos_token=False, device="cpu")
    direct = lm_eval.simple_evaluate(model=lm, tasks=["mmlu_fx"], num_fewshot=5, log_samples=False,
                                     task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False))
    assert ours["mmlu"] == pytest.approx(direct["groups"]["mmlu_fx"]["acc,none"], abs=1e-12)
    for subject, name in zip(SUBJECTS, names):
        assert row["subjects"][subject]["acc"] == direct["results"][name]["acc,none"]
