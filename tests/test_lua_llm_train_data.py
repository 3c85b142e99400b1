"""Lua-LLM's training text: the calibration source (C4, paper) or WikiText-103 train (the released code)."""
from __future__ import annotations

import copy

import pytest

from repro.allocation.lua_llm import stream_windows
from repro.config import ConfigError
from repro.models.adapter import adapter_for
from repro.prune.pipeline import prune_model
from tests.conftest import compose_run
from tests.test_lua_llm import FAST, LUA, _calib


class _CharTok:
    def encode(self, text):
        return [ord(c) for c in text]


def test_stream_windows_groups_rows_and_drops_group_tails():
    rows = ["abcde"] * 3 + ["xy"] * 3          # groups of 2 rows: "abcdeabcde", "abcdexy", "xyxy"
    w = stream_windows(rows, _CharTok(), seqlen=4, n=10, group=2)
    as_text = ["".join(map(chr, r)) for r in w.tolist()]
    assert as_text == ["abcd", "eabc", "abcd", "xyxy"]      # tails "de" and "exy" dropped, as the reference
    assert stream_windows(rows, _CharTok(), seqlen=4, n=2, group=2).shape == (2, 4)


def test_wikitext103_option_trains_on_the_given_file(tiny_llama, results_dir, tmp_path):
    model, _ = tiny_llama
    text = tmp_path / "wt103-train.txt"
    text.write_text("\n".join(f" = Section {i} = \n The quick brown fox {i} jumps over the lazy dog ." for i in range(60)))
    run = compose_run(*FAST, *LUA, "allocation.train_data=wikitext103", f"allocation.train_data_path={text}",
                      "allocation.train_windows=3", "allocation.iterations=2", "sparsity=0.5",
                      "allocation.save_masks=false", f"paths.results={results_dir}")
    m = copy.deepcopy(model)
    report = prune_model(m, adapter_for(m), run, _calib())
    src = report["allocation_report"]["train_windows_source"]
    assert src["windows"] == 3 and src["wikitext103_train"]["path"] == str(text)


def test_bad_train_data_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="allocation.train_data"):
        compose_run(*FAST, *LUA, "allocation.train_data=wikitext2")
    with pytest.raises(ConfigError, match="allocation.train_data_path"):
        compose_run(*FAST, *LUA, "allocation.train_data=wikitext103", f"allocation.train_data_path={tmp_path}/no.txt")
