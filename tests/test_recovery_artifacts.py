"""The one writer of a recovery's stored tensors (repro/recovery/_dense.py `save_tensors`), used by EoRA / FLAP
(`save_artifacts`) and RestoreLCC (`_save_comps`): same keys and values back, written atomically (no .tmp left)."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from repro.recovery._dense import load_artifacts, save_artifacts
from repro.recovery.restorelcc import HeadCompensation, _load_comps, _save_comps


def test_save_artifacts_round_trip(tmp_path):
    t = {"a.weight": torch.arange(6.).view(2, 3).t(), "b": torch.ones(2, requires_grad=True)}    # non-contiguous, grad
    save_artifacts(tmp_path, "x.safetensors", "x.json", t, {"k": 1})
    tensors, report = load_artifacts(tmp_path, "x.safetensors", "x.json")
    assert report == {"k": 1} and (tmp_path / "x.json").read_text() == json.dumps({"k": 1}, indent=1)
    assert set(tensors) == set(t) and all(torch.equal(tensors[k], t[k].detach()) for k in t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "x.safetensors"]


def test_restorelcc_compensation_file_keys_and_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    comps = {3: HeadCompensation([0, 2], torch.randn(2, 4, 4, generator=g), 4, 0.1, g)}
    path = tmp_path / "compensation.safetensors"
    _save_comps(path, comps)
    state = load_file(str(path))
    assert set(state) == {"3.heads", "3.beta", "3.b", "3.c"} and state["3.heads"].tolist() == [0, 2]
    assert torch.equal(state["3.beta"], comps[3].beta.detach()) and torch.equal(state["3.c"], comps[3].comps().detach())
    loaded = _load_comps(path)
    assert list(loaded) == [3] and sorted(loaded[3]) == [0, 2]
    assert torch.equal(loaded[3][2], comps[3].comps().detach()[1])
    assert [p.name for p in tmp_path.iterdir()] == ["compensation.safetensors"]
