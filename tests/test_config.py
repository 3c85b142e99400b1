"""The Hydra tree composes into typed configs, and bad input fails early with the field, value and choices."""
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from repro.config import ConfigError
from repro.run import preflight
from tests.conftest import compose_cfg, compose_run

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_config_composes(model):
    run = compose_run(f"model={model}")
    assert run.model.name == model
    assert run.model.dtype in ("float32", "float16", "bfloat16")


def test_paper_models_have_hub_ids_and_2048_context():
    for name in ("llama-7b", "llama2-7b", "llama2-70b", "llama3-8b", "mistral-7b", "opt-6.7b", "phi-2"):
        run = compose_run(f"model={name}")
        assert "/" in run.model.path and run.model.seqlen == 2048


def test_defaults_are_the_paper_protocol_and_offline_env_overrides_them():
    paper = compose_run()
    assert (paper.calib.name, paper.calib.nsamples, paper.calib.seed) == ("c4", 128, 0)
    assert paper.data.wikitext2.local_path is None and paper.eval.ppl.max_windows is None
    offline = compose_run("env=offline")
    assert offline.calib.name == "local_text"
    assert offline.data.wikitext2.local_path.endswith("repro/assets/wikitext2-test-head.txt")
    assert offline.eval.ppl.max_windows == 16


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as e:
        compose_cfg("score=wandaa")
    assert "magnitude" in str(e.value) and "wanda" in str(e.value)


def test_unknown_method_name_in_node():
    with pytest.raises(ConfigError, match=r"score.name.*'nope'.*magnitude"):
        compose_run("score.name=nope")


@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5"])
def test_sparsity_out_of_range(value):
    with pytest.raises(ConfigError, match=r"`sparsity`.*\[0.0, 1.0\)"):
        compose_run(f"sparsity={value}")


def test_nm_with_n_not_below_m():
    with pytest.raises(ConfigError, match="pattern.n"):
        compose_run("pattern=nm_2_4", "pattern.n=4", "sparsity=1.0")
    with pytest.raises(ConfigError, match="pattern.n"):
        compose_run("pattern=nm_2_4", "pattern.n=5")


def test_nm_ratio_must_equal_sparsity():
    with pytest.raises(ConfigError, match="2/4"):
        compose_run("pattern=nm_2_4", "sparsity=0.6")
    assert compose_run("pattern=nm_4_8", "sparsity=0.5").pattern.label == "4:8"


def test_unknown_key_and_wrong_type_name_the_field():
    with pytest.raises(ConfigError, match="score.granularityy"):
        compose_run("+score.granularityy=row")
    with pytest.raises(ConfigError, match="calib.nsamples"):
        compose_run("calib.nsamples=many")
    with pytest.raises(ConfigError, match="score.granularity.*'column'"):
        compose_run("score.granularity=column")


def test_bad_choices_in_core_fields():
    with pytest.raises(ConfigError, match="model.dtype.*'fp8'"):
        compose_run("model.dtype=fp8")
    with pytest.raises(ConfigError, match=r"eval.ppl.datasets\[0\].*'wikitext3'"):
        compose_run("eval.ppl.datasets=[wikitext3]")
    with pytest.raises(ConfigError, match="calib.nsamples"):
        compose_run("calib.nsamples=0")


def test_missing_local_paths_fail_in_preflight(tmp_path):
    with pytest.raises(ConfigError, match="data.wikitext2.local_path"):
        preflight(compose_run("model=tiny-llama", f"data.wikitext2.local_path={tmp_path}/nope.txt"))
    with pytest.raises(ConfigError, match="model.path"):
        preflight(compose_run(f"model.path={tmp_path}/no-model"))
    with pytest.raises(ConfigError, match="calib.local_path"):
        preflight(compose_run("model=tiny-llama", "score=wanda", f"calib.local_path={tmp_path}/c4.json.gz"))


def test_hub_id_offline_explains_how_to_use_a_local_copy():
    with pytest.raises(ConfigError, match=r"model.path=/data/llama2-7b"):
        preflight(compose_run("model=llama2-7b"))


def test_calibrated_method_without_calibration_data():
    with pytest.raises(ConfigError, match="needs calibration"):
        preflight(compose_run("model=tiny-llama", "env=offline", "score=wanda", "calib.name=none"))
