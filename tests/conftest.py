"""Shared fixtures. Nothing here touches the network: hub access is disabled and caches live in tmp dirs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="repro-tests-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["HF_HOME"] = str(_TMP / "hf")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The SmolLM2 conversion cache is shared across test sessions (it takes ~40 s to build).
os.environ.setdefault("REPRO_CACHE", str(Path.home() / ".cache" / "repro"))

import pytest  # noqa: E402

from repro.config import load_run_config  # noqa: E402
from repro.run import CONF_DIR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def compose_cfg(*overrides: str):
    """Compose the real Hydra config tree with overrides (DictConfig)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def compose_run(*overrides: str):
    """Compose and validate: the typed RunConfig a run would get."""
    return load_run_config(compose_cfg(*overrides))


@pytest.fixture
def results_dir(tmp_path):
    return str(tmp_path / "results")


@pytest.fixture(scope="session")
def tiny_llama():
    from repro.models.loading import load_model

    return load_model(compose_run("model=tiny-llama").model)


@pytest.fixture(scope="session")
def tiny_opt():
    from repro.models.loading import load_model

    return load_model(compose_run("model=tiny-opt").model)


@pytest.fixture(scope="session")
def tiny_mistral():
    """tiny-llama's sizes as a MistralForCausalLM (no config file of its own)."""
    from repro.models.loading import load_model

    return load_model(compose_run("model=tiny-llama", "model.random_init.model_type=mistral").model)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M (fp32). Converted from the GGUF once per machine (~40 s), then < 1 s."""
    pytest.importorskip("gguf")
    from repro.models.loading import load_model

    return load_model(compose_run("model=smollm2-135m").model)
