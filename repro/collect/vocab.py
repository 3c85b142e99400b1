"""The collector's fixed vocabulary: model, method, pattern and metric names a reported number may use.

Reported tables name methods that are not built yet (LoRA, LoSA, MOSP, the papers' other baselines), so the names
are a fixed list here, not the live registry (`repro.registry.names`). Model names are the `conf/model/*.yaml` stems
plus the papers' models we have no config for. A metric name (`ppl.wikitext2`, `zeroshot.boolq`, ...) says where
the value lives in a run record, how it is scaled to the paper's unit, which direction is better, and which
tolerance family judges it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SCORES = ("dense", "magnitude", "wanda", "sparsegpt", "multiflow", "dsnot", "ria", "pruner_zero", "alps",
          "mosp", "slimgpt", "flap", "llm_pruner")
ALLOCATIONS = ("uniform", "owl", "alpha", "neuronal", "lua_llm", "dsa", "atp", "losa")
# Scores that remove no weight (the registered scorers whose `prunes` is False; tests/test_collect.py checks the
# registry agrees): their cells have no allocation, pattern or sparsity, and one run fills every sparsity's row.
UNPRUNED = ("dense",)
RECOVERIES = ("none", "lora", "dora", "losa", "restorelcc", "eora", "lofit", "flap")
PATTERNS = ("unstructured", "2:4", "4:8", "structured")

# Models of the papers' tables that have no conf/model/ file (yet).
EXTRA_MODELS = ("llama-30b", "llama-65b", "vicuna-7b", "vicuna-13b", "opt-125m", "opt-1.3b", "opt-2.7b",
                "opt-30b", "opt-66b")

PPL_DATASETS = ("wikitext2", "c4", "ptb", "gsm8k", "code", "local_text")
ZEROSHOT_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "piqa",
                  "mmlu", "mean")

CONF_MODEL_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"


def prunes(score: str) -> bool:
    """Does this score (a run's `score.name`, a reported row's `score`) remove weights?"""
    return score not in UNPRUNED


def model_names() -> tuple:
    stems = sorted(p.stem for p in CONF_MODEL_DIR.glob("*.yaml")) if CONF_MODEL_DIR.is_dir() else []
    return tuple(sorted(set(stems) | set(EXTRA_MODELS)))


@dataclass(frozen=True)
class Metric:
    name: str                 # as written in reported.yaml / tables.yaml
    record_path: str          # dotted path inside result.json
    scale: float              # record value x scale = the paper's unit
    lower_is_better: bool
    family: str               # tolerance family: ppl | zeroshot | time | memory
    unit: str

    def from_record(self, record: dict):
        node = record
        for part in self.record_path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if node is None else float(node) * self.scale


_OTHER_METRICS = {
    "timings.prune_h": Metric("timings.prune_h", "timings.prune_s", 1 / 3600, True, "time", "h"),
    "timings.total_h": Metric("timings.total_h", "timings.total_s", 1 / 3600, True, "time", "h"),
    # Papers write "GB" for GPU memory; the record measures GiB (torch.cuda.max_memory_allocated / 2**30).
    "memory.peak_gpu_gib": Metric("memory.peak_gpu_gib", "memory.peak_gpu_gib", 1.0, True, "memory", "GiB"),
    "memory.peak_rss_gib": Metric("memory.peak_rss_gib", "memory.peak_rss_gib", 1.0, True, "memory", "GiB"),
    # repro/eval/speed.py: pruned / dense tokens per second, measured in the same run.
    **{f"speed.{k}_speedup": Metric(f"speed.{k}_speedup", f"metrics.speed.{k}_speedup", 1.0, False, "speed", "x")
       for k in ("prefill", "decode", "generate")},
}


# Hypervolume of a multi-objective run's preference models over these domains (repro/collect/compare/pareto.py).
HV_SETTINGS = ("c4_gsm8k", "c4_gsm8k_code")


def metric_names() -> tuple:
    return tuple([f"ppl.{d}" for d in PPL_DATASETS] + [f"zeroshot.{t}" for t in ZEROSHOT_TASKS]
                 + list(_OTHER_METRICS) + [f"hv.{h}" for h in HV_SETTINGS])


def metric(name: str) -> Metric:
    """The Metric for a name; KeyError for an unknown one (callers turn it into a DataFileError)."""
    family, _, sub = name.partition(".")
    if family == "ppl" and sub in PPL_DATASETS:
        return Metric(name, f"metrics.ppl.{sub}", 1.0, True, "ppl", "")
    if family == "zeroshot" and sub in ZEROSHOT_TASKS:
        # Records store lm-eval's fraction; the papers print percent.
        return Metric(name, f"metrics.zeroshot.{sub}", 100.0, False, "zeroshot", "%")
    if name in _OTHER_METRICS:
        return _OTHER_METRICS[name]
    if family == "hv" and sub in HV_SETTINGS:
        return Metric(name, f"metrics.hv.{sub}", 1.0, False, "hv", "")
    raise KeyError(name)


# Tolerance = max(abs, rel x |reported|) (+ half the reported number's printed resolution); a reproduced value
# within it is "reproduced", within `close` x tolerance "close", else "off". Overridable in tables.yaml
# (`tolerances:`) and on the command line (`--tol ppl.rel=0.05`).
DEFAULT_TOLERANCES = {
    "ppl": {"abs": 0.0, "rel": 0.02, "close": 3.0},
    "zeroshot": {"abs": 1.0, "rel": 0.0, "close": 3.0},
    "time": {"abs": 0.0, "rel": 0.25, "close": 2.0},
    "memory": {"abs": 0.0, "rel": 0.10, "close": 2.0},
    "speed": {"abs": 0.0, "rel": 0.10, "close": 2.0},
    "hv": {"abs": 0.0, "rel": 0.05, "close": 2.0},
}

VERDICTS = ("reproduced", "close", "off", "not run", "not reported")
