"""Zero-shot accuracy of the in-memory model through lm-evaluation-harness (pinned `lm_eval[hf]>=0.4,<0.5`).

    python -m repro.run env=offline model=smollm2-135m eval=zeroshot_fixtures   # bundled fixture tasks
    python -m repro.run model=llama2-7b score=wanda eval=zeroshot_rte            # Wanda / NeuronAL / RestoreLCC set
    python -m repro.run model=llama2-7b score=wanda eval=zeroshot                # Lua-LLM / LoSA set (piqa, no rte)
    ... eval.zeroshot.data_dir=/data/zeroshot      # offline: <dir>/<task>.jsonl in the dataset's original schema

The papers (Wanda, NeuronAL, OWL, RestoreLCC: Wanda's lm-eval fork at df3da98, `lib/eval.py`; LoSA and Lua-LLM:
lm-eval, version unknown / 0.4.7) score the pruned model object with the harness, zero-shot, and report `acc`
per task (Wanda's author in locuslab/wanda#31; RestoreLCC's dense HellaSwag 56.95 is `acc`) and the plain mean.
We do the same with lm-eval 0.4's Python API: `HFLM(pretrained=<model object>, tokenizer=<tokenizer>)` and
`simple_evaluate(..., num_fewshot=0)`.

Where tasks come from:
- the tasks of `BUILTIN_TASKS` (the 7-task set, `rte`, `sglue_rte`) are lm-eval's own YAML definitions (prompt,
  choices, target, metrics, version), read from the installed lm-eval and passed as config dicts. With
  `data_dir` only the data location changes (`dataset_path: json`, `data_files` on the split lm-eval evaluates:
  test for ARC / OpenBookQA, validation otherwise); without it the hub dataset of the YAML is used, at
  `revisions[task]` when given;
- any other name (or a built-in name redefined there) is looked up in `include_path` (a directory of lm-eval
  task YAMLs) through `TaskManager(include_path=..., include_defaults=False)` — the default index of ~16k YAMLs
  costs a minute here.

Settings that move the numbers are config fields and go into `protocol.zeroshot`: `add_bos_token` (default False
as in the papers; lm-eval >= 0.4.10 follows the tokenizer, which adds BOS for LLaMA), batch size, `limit`, task
versions, dataset path / name / revision / local file hash, dtype, the lm-eval version. `bos_in_inputs` records
what the model really sees: lm-eval's switch only sets `add_special_tokens`, so for a tokenizer that adds no BOS
(SmolLM2, GPT-2 style) `add_bos_token=True` changes nothing, and the record says so.

MMLU (`tasks: [mmlu]`, Lua-LLM Table 13: eval=mmlu, 5-shot): lm-eval's own `mmlu/default/mmlu_<subject>.yaml`
definitions (cais/mmlu, test split, few-shot examples = the first `num_fewshot` of the dev split, `acc`), one task
per subject (`eval.zeroshot.mmlu_subjects`, default all 57; an unknown subject is a ConfigError listing the valid
ones), reported as `mmlu` = the sample-weighted mean accuracy over the subjects (lm-eval's group aggregation,
`weight_by_size`), per-subject values in the protocol. Offline: `<data_dir>/mmlu/<subject>/{test,dev}.jsonl` in
cais/mmlu's schema (question, subject, choices, answer).

Deviations from the papers' harness (lm-eval 0.3 fork): task versions of lm-eval 0.4 (BoolQ v2 from
`aps/super_glue`, PIQA from `baber/piqa`, others v1; the papers ran v0, BoolQ v1), so absolute numbers can differ
by prompt/normalisation changes between harness versions; `rte` is the GLUE RTE the papers used (`sglue_rte` is
the SuperGLUE one). `limit` is None (the references used 2000 for 65B/70B models only).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from repro.config import ConfigError, ZeroShotConfig

log = logging.getLogger(__name__)

# Task name -> lm-eval's YAML (relative to lm_eval/tasks) in lm-eval 0.4.x.
BUILTIN_TASKS = {
    "boolq": "super_glue/boolq/default.yaml",
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "rte": "glue/rte/default.yaml",
    "sglue_rte": "super_glue/rte/default.yaml",
}
LOCAL_DATA_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
MMLU = "mmlu"                    # expands into lm-eval's per-subject tasks mmlu_<subject> (mmlu/default/)
MMLU_DIR = "mmlu/default"
# lm-eval's default metrics for a multiple-choice task without a metric_list.
DEFAULT_MC_METRICS = ("acc", "acc_norm")
SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234, "fewshot_random_seed": 1234}


def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _load_task_yaml(path: Path, resolve_functions: bool) -> dict:
    """lm-eval's own YAML loader (includes merged, `!function` resolved or kept as strings). lm-eval has no public
    reader of a task file (TaskManager only builds tasks); `_yaml_loader` exists from 0.4.12, the lower bound in
    pyproject.toml — the import error below says so instead of a bare ModuleNotFoundError."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError as e:  # pragma: no cover — only with lm-eval < 0.4.12
        import lm_eval

        raise ImportError(f"repro needs lm-eval >= 0.4.12 (found {getattr(lm_eval, '__version__', '?')}): "
                          "pip install 'lm_eval[hf]>=0.4.12,<0.5'") from e

    return load_yaml(path, resolve_func=resolve_functions)


def include_path_tasks(include_path: str | None) -> dict[str, Path]:
    """Task names defined by the YAML files under `include_path` -> their file."""
    if not include_path:
        return {}
    found = {}
    for path in sorted(Path(include_path).rglob("*.yaml")):
        try:
            cfg = _load_task_yaml(path, resolve_functions=False)
        except Exception:  # noqa: BLE001 — not a task file (e.g. a group or a broken YAML): lm-eval decides
            continue
        if isinstance(cfg.get("task"), str):
            found[cfg["task"]] = path
    return found


def is_builtin(task: str, cfg: ZeroShotConfig) -> bool:
    """One of BUILTIN_TASKS and not redefined under `include_path` (a user's own YAML of that name wins)."""
    return task in BUILTIN_TASKS and task not in include_path_tasks(cfg.include_path)


def _task_definition(task: str, cfg: ZeroShotConfig, resolve_functions: bool) -> dict:
    if is_builtin(task, cfg):
        return _load_task_yaml(_lm_eval_tasks_dir() / BUILTIN_TASKS[task], resolve_functions)
    return _load_task_yaml(include_path_tasks(cfg.include_path)[task], resolve_functions)


def eval_split(definition: dict) -> str:
    """The split lm-eval scores: the test split when the task has one, else validation."""
    return definition.get("test_split") or definition.get("validation_split")


def task_metrics(definition: dict) -> tuple[str, ...]:
    metric_list = definition.get("metric_list")
    if metric_list:
        return tuple(m["metric"] for m in metric_list if isinstance(m.get("metric"), str))
    return DEFAULT_MC_METRICS if definition.get("output_type") == "multiple_choice" else ()


def local_data_file(data_dir: str, task: str) -> Path | None:
    for suffix in LOCAL_DATA_FORMATS:
        path = Path(data_dir) / f"{task}{suffix}"
        if path.is_file():
            return path
    return None


def metric_for(task: str, cfg: ZeroShotConfig) -> str:
    return cfg.metrics.get(task, cfg.metric)


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_dataset_reachable(dataset_path: str, revision: str | None) -> bool:
    """Cached locally (offline) or answered by the hub (online, 10 s timeout)."""
    from huggingface_hub import constants

    if (Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_path.replace('/', '--')}").is_dir():
        return True
    if _offline():
        return False
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(dataset_path, revision=revision, timeout=10)
        return True
    except Exception:  # noqa: BLE001 — any failure means "not reachable"
        return False


def check_zeroshot(cfg: ZeroShotConfig) -> None:
    """Task names, metrics and data reachability; raises ConfigError before the model is loaded."""
    if cfg.include_path and not Path(cfg.include_path).is_dir():
        raise ConfigError("eval.zeroshot.include_path", cfg.include_path, "a directory of lm-eval task YAML files")
    custom = include_path_tasks(cfg.include_path)
    if cfg.data_dir and not Path(cfg.data_dir).is_dir():
        raise ConfigError("eval.zeroshot.data_dir", cfg.data_dir,
                          "a directory holding <task>.jsonl files in the datasets' original schema")
    available = sorted(set(BUILTIN_TASKS) | set(custom) | {MMLU})
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError("eval.zeroshot.tasks", list(cfg.tasks), "task names without duplicates")
    for key in list(cfg.metrics) + list(cfg.revisions):
        if key not in cfg.tasks:
            raise ConfigError(f"eval.zeroshot.metrics/revisions.{key}", key, "one of the tasks " + ", ".join(cfg.tasks))
    if cfg.mmlu_subjects is not None and MMLU not in cfg.tasks:
        raise ConfigError("eval.zeroshot.mmlu_subjects", cfg.mmlu_subjects, "null unless `mmlu` is one of the tasks")
    for i, task in enumerate(cfg.tasks):
        if task not in available:
            raise ConfigError(f"eval.zeroshot.tasks[{i}]", task, "one of " + ", ".join(available),
                              "Other lm-eval tasks: put their YAML in a directory and set eval.zeroshot.include_path.")
        if task == MMLU and task not in custom:
            check_mmlu(cfg)
            continue
        definition = _task_definition(task, cfg, resolve_functions=False)
        metric, produced = metric_for(task, cfg), task_metrics(definition)
        if metric not in produced:
            field_name = f"eval.zeroshot.metrics.{task}" if task in cfg.metrics else "eval.zeroshot.metric"
            raise ConfigError(field_name, metric, f"a metric task `{task}` produces: " + ", ".join(produced))
        _check_task_data(task, f"eval.zeroshot.tasks[{i}]", definition, cfg)


def _check_task_data(task: str, field_name: str, definition: dict, cfg: ZeroShotConfig) -> None:
    if is_builtin(task, cfg) and cfg.data_dir:
        if local_data_file(cfg.data_dir, task) is None:
            raise ConfigError("eval.zeroshot.data_dir", cfg.data_dir,
                              f"a directory with {task}.jsonl (or .json/.parquet): the `{eval_split(definition)}` "
                              f"split of {definition['dataset_path']} in its original schema")
        return
    dataset_path = definition.get("dataset_path")
    if dataset_path in ("json", "csv", "parquet", "text"):
        files = (definition.get("dataset_kwargs") or {}).get("data_files") or {}
        for path in (files.values() if isinstance(files, dict) else [files]):
            for p in ([path] if isinstance(path, str) else path):
                if not Path(p).exists():
                    raise ConfigError(f"task {task}: dataset_kwargs.data_files", p,
                                      "an existing file (relative paths are resolved from the working directory)")
        return
    if dataset_path and not _hub_dataset_reachable(dataset_path, cfg.revisions.get(task)):
        option = ("eval.zeroshot.data_dir=<dir with " + f"{task}.jsonl>" if is_builtin(task, cfg)
                  else "local data_files in the task YAML")
        raise ConfigError(field_name, task, f"a task whose dataset `{dataset_path}` is reachable",
                          f"It is neither in the hub cache nor reachable online (HF offline mode: {_offline()}). "
                          f"Use {option}; the bundled fixtures are eval=zeroshot_fixtures.")


def _lm_eval_tasks_dir_no_import() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("lm_eval").submodule_search_locations[0]) / "tasks"


def mmlu_all_subjects() -> list[str]:
    """The 57 subjects of the installed lm-eval (file names mmlu_<subject>.yaml; lm-eval is not imported)."""
    return sorted(p.stem[len("mmlu_"):] for p in (_lm_eval_tasks_dir_no_import() / MMLU_DIR).glob("mmlu_*.yaml"))


def mmlu_subjects(cfg: ZeroShotConfig) -> list[str]:
    return list(cfg.mmlu_subjects) if cfg.mmlu_subjects is not None else mmlu_all_subjects()


def mmlu_local_files(data_dir: str, subject: str) -> dict:
    return {split: Path(data_dir) / MMLU / subject / f"{split}.jsonl" for split in ("test", "dev")}


def check_mmlu(cfg: ZeroShotConfig) -> None:
    valid = mmlu_all_subjects()
    subjects = mmlu_subjects(cfg)
    if not subjects:
        raise ConfigError("eval.zeroshot.mmlu_subjects", cfg.mmlu_subjects, "null (all 57) or a non-empty list")
    for i, subject in enumerate(subjects):
        if subject not in valid:
            raise ConfigError(f"eval.zeroshot.mmlu_subjects[{i}]", subject, "an MMLU subject: " + ", ".join(valid))
    if len(set(subjects)) != len(subjects):
        raise ConfigError("eval.zeroshot.mmlu_subjects", subjects, "subjects without duplicates")
    metric = metric_for(MMLU, cfg)
    if metric != "acc":
        field_name = "eval.zeroshot.metrics.mmlu" if MMLU in cfg.metrics else "eval.zeroshot.metric"
        raise ConfigError(field_name, metric, "acc (the only metric of lm-eval's MMLU)")
    if cfg.data_dir:
        needed = ("test", "dev") if cfg.num_fewshot else ("test",)
        for subject in subjects:
            for split in needed:
                path = mmlu_local_files(cfg.data_dir, subject)[split]
                if not path.is_file():
                    raise ConfigError("eval.zeroshot.data_dir", cfg.data_dir,
                                      f"a directory with mmlu/{subject}/{split}.jsonl (cais/mmlu schema: question, "
                                      f"subject, choices, answer)")
    elif not _hub_dataset_reachable("cais/mmlu", cfg.revisions.get(MMLU)):
        raise ConfigError("eval.zeroshot.tasks", MMLU, "a task whose dataset `cais/mmlu` is reachable",
                          "Use eval.zeroshot.data_dir=<dir with mmlu/<subject>/{test,dev}.jsonl>; the bundled "
                          "fixtures are eval=mmlu_fixtures.")


def mmlu_specs(cfg: ZeroShotConfig) -> list[dict]:
    """lm-eval's per-subject MMLU task definitions (local data files with `data_dir`)."""
    specs = []
    for subject in mmlu_subjects(cfg):
        spec = _load_task_yaml(_lm_eval_tasks_dir() / MMLU_DIR / f"mmlu_{subject}.yaml", True)
        spec.pop("tag", None)
        if cfg.data_dir:
            files = {k: str(v.resolve()) for k, v in mmlu_local_files(cfg.data_dir, subject).items() if v.is_file()}
            spec.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
        elif cfg.revisions.get(MMLU):
            spec["dataset_kwargs"] = {**(spec.get("dataset_kwargs") or {}), "revision": cfg.revisions[MMLU]}
        specs.append(spec)
    return specs


def task_spec(task: str, cfg: ZeroShotConfig) -> dict | str:
    """What `simple_evaluate` gets for one task: a config dict for the built-in tasks, a name otherwise."""
    if not is_builtin(task, cfg):
        return task
    spec = _task_definition(task, cfg, resolve_functions=True)
    spec.pop("tag", None)
    if cfg.data_dir:
        path = local_data_file(cfg.data_dir, task).resolve()
        split = eval_split(spec)
        spec.update(dataset_path=LOCAL_DATA_FORMATS[path.suffix], dataset_name=None,
                    dataset_kwargs={"data_files": {split: str(path)}}, training_split=None,
                    validation_split=split if split == spec.get("validation_split") else None,
                    test_split=split if split == spec.get("test_split") else None)
    elif cfg.revisions.get(task):
        spec["dataset_kwargs"] = {**(spec.get("dataset_kwargs") or {}), "revision": cfg.revisions[task]}
    return spec


def hub_dataset_commit(dataset_path: str, revision: str | None = None) -> str | None:
    """The commit the local hub cache resolved `revision` (default `main`) of a dataset repo to; None if unknown."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset_path.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    if ref.is_file():
        return ref.read_text().strip()
    return revision if revision and (repo / "snapshots" / revision).is_dir() else None


def _dataset_fingerprint(task: str, lm_eval_config: dict, cfg: ZeroShotConfig) -> dict:
    kwargs = lm_eval_config.get("dataset_kwargs") or {}
    path = lm_eval_config.get("dataset_path")
    fp = {"path": path, "name": lm_eval_config.get("dataset_name"), "revision": kwargs.get("revision")}
    if is_builtin(task, cfg) and cfg.data_dir:
        local = local_data_file(cfg.data_dir, task)
        fp.update(revision="local file", local_path=str(local), sha256=hashlib.sha256(local.read_bytes()).hexdigest(),
                  original_dataset=_task_definition(task, cfg, False).get("dataset_path"))
    elif path not in ("json", "csv", "parquet", "text"):
        fp["resolved_commit"] = hub_dataset_commit(path, fp["revision"])
        fp["revision"] = fp["revision"] or "unpinned (latest at run time; see resolved_commit)"
    else:
        fp["data_files"] = kwargs.get("data_files")
    return fp


def bos_in_inputs(lm) -> bool:
    """Does the first token of an encoded context equal BOS, with the lm's settings (what the model sees)?"""
    bos = lm.tokenizer.bos_token_id
    ids = lm.tok_encode("Question: is this a test?")
    return bos is not None and len(ids) > 0 and ids[0] == bos


def evaluate_zeroshot(model, tokenizer, cfg: ZeroShotConfig) -> tuple[dict, dict]:
    """Return `(metrics, protocol)`: `{task: value of its metric, "mean": plain mean}` and the fingerprint."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = model.get_input_embeddings().weight.device
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, add_bos_token=cfg.add_bos_token,
              device=str(device))
    manager = TaskManager(include_path=cfg.include_path, include_defaults=False)
    limit = int(cfg.limit) if cfg.limit is not None and cfg.limit >= 1 else cfg.limit
    was_training = model.training
    model.eval()
    log.info("zero-shot: %s (lm-eval %s, %d-shot, batch %d, limit %s, add_bos_token %s)", ", ".join(cfg.tasks),
             lm_eval.__version__, cfg.num_fewshot, cfg.batch_size, limit, cfg.add_bos_token)
    started = time.perf_counter()
    try:
        specs = [s for t in cfg.tasks for s in (mmlu_specs(cfg) if t == MMLU and not _custom(t, cfg)
                                                 else [task_spec(t, cfg)])]
        res = lm_eval.simple_evaluate(model=lm, tasks=specs, task_manager=manager,
                                      num_fewshot=cfg.num_fewshot, limit=limit, log_samples=False,
                                      bootstrap_iters=cfg.bootstrap_iters, **SEEDS)
    finally:
        model.train(was_training)
    metrics, protocol = _collect(res, cfg, lm, model, limit)
    protocol["wall_s"] = time.perf_counter() - started
    return metrics, protocol


def _custom(task: str, cfg: ZeroShotConfig) -> bool:
    return task in include_path_tasks(cfg.include_path)


def _collect_mmlu(res: dict, cfg: ZeroShotConfig) -> tuple[float, dict]:
    """Sample-weighted mean `acc` over the subjects (lm-eval's mmlu group: weight_by_size) and per-subject rows."""
    subjects, total, weighted = {}, 0, 0.0
    for subject in mmlu_subjects(cfg):
        name = f"mmlu_{subject}"
        acc, n = float(res["results"][name]["acc,none"]), int(res["n-samples"][name]["effective"])
        subjects[subject] = {"acc": acc, "n_samples": n, "version": res["versions"].get(name)}
        total, weighted = total + n, weighted + acc * n
    lm_cfg = res["configs"][f"mmlu_{mmlu_subjects(cfg)[0]}"]
    return weighted / total, {
        "metric": "acc", "value": weighted / total, "aggregation": "sample-weighted mean over subjects",
        "n_samples": total, "subjects": subjects, "split": lm_cfg.get("test_split"),
        "fewshot_split": lm_cfg.get("fewshot_split"), "fewshot_sampler": (lm_cfg.get("fewshot_config") or {}).get(
            "sampler"), "num_fewshot": cfg.num_fewshot, "prompt": str(lm_cfg.get("doc_to_text")),
        "dataset": {"path": lm_cfg.get("dataset_path"), "data_files_dir": (str(Path(cfg.data_dir) / MMLU)
                                                                             if cfg.data_dir else None),
                    "revision": cfg.revisions.get(MMLU)}}


def _collect(res: dict, cfg: ZeroShotConfig, lm, model, limit) -> tuple[dict, dict]:
    import lm_eval

    metrics, per_task = {}, {}
    for task in cfg.tasks:
        if task == MMLU and not _custom(task, cfg):
            metrics[task], per_task[task] = _collect_mmlu(res, cfg)
            continue
        metric, row = metric_for(task, cfg), res["results"][task]
        if f"{metric},none" not in row:
            raise ConfigError(f"eval.zeroshot.metrics.{task}", metric, "a metric the task produced: " + ", ".join(
                k.split(",")[0] for k in row if "," in k and "stderr" not in k))
        metrics[task] = float(row[f"{metric},none"])
        stderr = row.get(f"{metric}_stderr,none")
        lm_cfg = res["configs"][task]
        per_task[task] = {
            "metric": metric, "value": metrics[task],
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            "all_metrics": {k.split(",")[0]: v for k, v in row.items() if "," in k},
            "n_samples": res.get("n-samples", {}).get(task), "version": res["versions"].get(task),
            "split": lm_cfg.get("test_split") or lm_cfg.get("validation_split"),
            "dataset": _dataset_fingerprint(task, lm_cfg, cfg),
            "prompt": str(lm_cfg.get("doc_to_text")), "target_delimiter": lm_cfg.get("target_delimiter"),
        }
    metrics["mean"] = sum(metrics[t] for t in cfg.tasks) / len(cfg.tasks)
    protocol = {
        "harness": "lm-eval", "lm_eval_version": lm_eval.__version__, "model_backend": "HFLM(in-memory model)",
        "num_fewshot": cfg.num_fewshot, "batch_size": cfg.batch_size, "limit": limit,
        "add_bos_token": cfg.add_bos_token, "bos_in_inputs": bos_in_inputs(lm),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "device": str(lm.device),
        "bootstrap_iters": cfg.bootstrap_iters, "seeds": dict(SEEDS), "mean": "plain mean over tasks",
        "task_source": "local data_dir" if cfg.data_dir else "hub", "include_path": cfg.include_path,
        "transformers_version": res.get("transformers_version"), "tasks": per_task,
    }
    if cfg.add_bos_token and not protocol["bos_in_inputs"]:
        log.warning("add_bos_token=True but this tokenizer adds no BOS: the model sees no BOS (lm-eval semantics)")
    for task, row in per_task.items():
        log.info("zero-shot %s %s = %.4f (n=%s)", task, row["metric"], row["value"], row["n_samples"])
    return metrics, protocol
