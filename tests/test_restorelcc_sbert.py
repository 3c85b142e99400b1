"""RestoreLCC's SBERT hard negatives (`recovery.negatives=sbert`, repro/recovery/lcc_probe.py) end to end, with a tiny
RANDOM sentence-transformers model built here (a 2-layer BertModel + mean pooling, saved to tmp_path; no hub): the run
pairs each response with the most cosine-similar OTHER response as that model encodes them (computed here with
sentence-transformers' own `encode` + `util.cos_sim`). A missing directory: tests/test_restorelcc.py."""
import re

import torch

from conftest import compose_run

TINY = ("model=tiny-llama", "env=offline", "score=wanda", "sparsity=0.5", "recovery=restorelcc",
        "recovery.top_heads=4", "eval.ppl.max_windows=1", "recovery_budget.training.max_steps=2",
        "recovery_budget.data.max_length=400", "recovery_budget.data.rows=0:12", "recovery_budget.negatives=sbert",
        "recovery.probe_epochs=5")


def tiny_sbert(root, texts) -> str:
    """A random sentence-transformers model (BERT 2 x 32, vocabulary = the words of `texts`) saved under root."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    bert_dir = root / "bert"
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(bert_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(bert_dir)
    word = models.Transformer(str(bert_dir), max_seq_length=256)
    out = root / "sbert"
    SentenceTransformer(modules=[word, models.Pooling(32, pooling_mode="mean")]).save(str(out))
    return str(out)


def test_sbert_negatives_are_the_most_similar_other_response_by_that_model(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer, util

    from repro.data.instruct import STANDIN, completion, load_rows
    from repro.recovery import lcc_probe
    from repro.run import execute

    data = compose_run(*TINY).recovery.train_data()
    responses = [completion(r, data) for r in load_rows(data)]
    assert data.path == str(STANDIN) and len(responses) == 12
    model_dir = tiny_sbert(tmp_path, responses)
    real, seen = lcc_probe.probe_pairs, []
    monkeypatch.setattr(lcc_probe, "probe_pairs", lambda rows, cfg: seen.append((rows, real(rows, cfg))) or seen[-1][1])
    rec = execute(compose_run(*TINY, f"recovery.sbert_model={model_dir}", f"paths.results={tmp_path / 'results'}"))
    assert rec["status"] == "ok", rec.get("error")
    probe = rec["recovery"]["probe"]
    assert probe["negatives"] == "sbert" and probe["sbert_model"] == model_dir and "standin" not in probe

    (rows, (prompts, pos, neg, report)), = seen
    got = [completion(r, data) for r in rows]
    assert got == responses and report["pairs"] == len(neg) == 12
    emb = SentenceTransformer(model_dir).encode(got, convert_to_tensor=True)
    sim = util.cos_sim(emb, emb).fill_diagonal_(-2.0)
    best = sim.argmax(dim=1)
    assert len(set(best.tolist())) > 1                                # a real choice, not one constant row
    top2 = sim.topk(2, dim=1).values
    assert bool((top2[:, 0] - top2[:, 1] > 1e-6).all())              # no near-ties: the argmax is well defined
    for i, j in enumerate(best.tolist()):
        assert pos[i] == prompts[i] + got[i] and neg[i] == prompts[i] + got[j] and j != i

