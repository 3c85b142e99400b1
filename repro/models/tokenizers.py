"""A byte-level tokenizer for random-weight test models: no training, no files, no hub.

Every UTF-8 byte is one token (256 ids, GPT-2's byte alphabet in sorted order), plus <bos>=256, <eos>=257, <pad>=258. Models built with
`random_init` use `vocab_size >= 259`. No BOS is added, like the SmolLM2 default.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _backend():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<bos>", "<eos>", "<pad>"])
    return tok


def byte_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_backend(), bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>")
