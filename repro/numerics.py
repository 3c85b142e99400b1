"""Code changes that change numbers: the part of a run's identity that its config cannot show.

Stored prunes, adapters and records are reused by identity (repro/stages.py), and the identity hashes the config
and the content of the input files. A code change that makes the same config give different numbers (other
masks, weights or metrics: a new algorithm path, a different summation order, another tie rule) would otherwise
leave every stored stage and record of that config silently stale. Each such change is listed in `CHANGES`:

    Change("score.sparsegpt", "prune", {"score.name": "sparsegpt", "pattern.name": "nm"}, "e1f6789", "...")

Every run whose config matches `when` then carries `numerics: {stage: {component: version}}` in its identity
fields (version = how many listed changes of that component apply), so:
- its prune (or recover) stage gets a new id: a prune stored before the change is not reused, a new one is built;
- the collector skips a record whose `numerics` differ from what the code computes for its config, naming the
  change (repro/collect/records/load.py: "its identity predates e1f6789, which changed ...: rerun it");
- `repro rekey` (a results folder) and `python -m repro.collect.publish --rekey` (the published records) move a
  record to its new identity only when the commit that produced it (`versions.git_commit`) already contains the
  change; an older one stays stale until rerun.
A config no change applies to keeps the identity it had before this mechanism existed (no `numerics` field).

When to add an entry: any commit that changes what a method computes on a fixed config, including
rounding-level reorderings (e1f6789 moved SmolLM2's SparseGPT 2:4 WikiText-2 perplexity from 131.59 to 129.54
through fp32 near-ties). Bug fixes that turn a crash into a number need none (there was no number to go stale).
Not listed here: the thread count and the BLAS (they change fp32 reductions, not the code; records keep them under
`runtime`, docs/record.md).
Config fields added after records existed (`ADDED`) are the other half of that history: a new field enters the
identity of every config of its group, so a record made before it no longer has the identity this code computes
for its own config. Each such field is listed with the value that reproduces what the code computed before it
existed (`None` for a new optional input; `reference` for LoSA's `final_sparsity`, whose new default changed the
numbers). `legacy_fields` fills them into an old record's config, so `repro verify` reruns what the record's code
ran and `repro rekey` (`publish --rekey` for results/published/) moves the record to the identity that config has
today (repro/collect/rekey.py).
Caches keyed below a stage id with their own version (RestoreLCC's probe and statistics,
`repro.recovery.lcc_probe.PROBE_VERSION`) bump that version as well when the change touches what they hold.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from repro.record import dotted_get, dotted_has

STAGES = ("prune", "recover", "evaluate")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Change:
    component: str              # what changed, e.g. "score.sparsegpt" (a config group and its method name)
    stage: str                  # whose stored output it invalidates: prune | recover | evaluate
    when: Mapping[str, object]  # dotted config field -> value: the change applies when all of them match
    commit: str                 # the first commit with the new numerics
    what: str                   # one line: what changed and how it shows

    def applies(self, plain_cfg: dict) -> bool:
        return all(dotted_get(plain_cfg, key) == value for key, value in self.when.items())


CHANGES: tuple = (
    Change("score.sparsegpt", "prune", {"score.name": "sparsegpt", "pattern.name": "nm"}, "e1f6789",
           "N:M groups: per-group OBS errors from precomputed closed-form solutions and two-level lazy updates; "
           "weights move by <= 2.4e-6, masks differ at fp32 near-ties (SmolLM2 2:4 WikiText-2 131.59 -> 129.54)"),
)


@dataclass(frozen=True)
class Added:
    field: str                  # dotted config field, e.g. "recovery.final_sparsity"
    legacy: object              # the value that computes what the code computed before the field existed
    commit: str                 # the commit that added it
    what: str


ADDED: tuple = (
    Added("recovery.data.task", None, "ccd4603", "RestoreLCC task-specific recovery data; None: the general data"),
    Added("recovery.data.task_path", None, "ccd4603", "a local file of a task's rows; None: none"),
    Added("recovery.final_sparsity", "reference", "b335748", "LoSA's last round; before it, the reference's band "
          "LP (now `reference`), whose final zero count drifts from the uniform model's; the default became `exact`"),
)


def legacy_fields(recorded_cfg: dict, current_cfg: dict) -> dict:
    """{field: legacy value} of each field in `ADDED` that a record's config lacks and this code's schema has
    (`current_cfg`: the record's config as this code loads it, with every field filled in)."""
    return {a.field: a.legacy for a in ADDED if dotted_has(current_cfg, a.field) and not dotted_has(recorded_cfg, a.field)}


def numerics_fields(plain_cfg: dict) -> dict:
    """{stage: {component: version}} of the listed changes that apply to this config (empty when none)."""
    out: dict = {}
    for change in CHANGES:
        if change.applies(plain_cfg):
            stage = out.setdefault(change.stage, {})
            stage[change.component] = stage.get(change.component, 0) + 1
    return out


def run_numerics(plain_cfg: dict, prunes: bool) -> dict:
    """What a run's identity fields carry under `numerics` (a dense run has only evaluation-stage changes)."""
    return {stage: v for stage, v in numerics_fields(plain_cfg).items() if prunes or stage == "evaluate"}


def record_numerics(record: dict) -> tuple:
    """(the `numerics` a run record's identity carries, what this code computes for its config)."""
    fields = record.get("identity_fields") or {}
    prunes = "sparsity" in fields            # repro.record.identity_fields drops it for the dense reference
    return fields.get("numerics"), run_numerics(record.get("config") or {}, prunes)


def record_staleness(record: dict) -> Optional[str]:
    """Why a run record's numbers are not what this code computes for its config (None: they are)."""
    return stale_reason(*record_numerics(record))


def outdated(recorded: Optional[dict], current: dict) -> list:
    """The changes that separate a record's `numerics` from the code's, oldest first (empty: the record is
    current). A record newer than the code (higher version) lists the changes this code lacks the same way."""
    recorded = recorded or {}
    out = []
    for stage in STAGES:
        have, want = recorded.get(stage, {}), current.get(stage, {})
        for component in sorted(set(have) | set(want)):
            lo, hi = sorted((have.get(component, 0), want.get(component, 0)))
            history = [c for c in CHANGES if c.component == component and c.stage == stage]
            out.extend(history[lo:hi])
    return out


def stale_reason(recorded: Optional[dict], current: dict) -> Optional[str]:
    """Why a record made with `recorded` numerics is not what this code computes for its config (None: it is)."""
    if (recorded or {}) == current:
        return None
    changes = outdated(recorded, current)
    if not changes:
        return f"numerics {recorded or {}} are not this code's {current}: made by a newer repro (upgrade)"
    return ("its identity predates " + "; ".join(f"{c.commit}, which changed {c.component} ({c.what})"
                                                 for c in changes)
            + ": rerun it (the same command computes the new identity), or, if its versions.git_commit already "
            "contains that commit, move it with `repro rekey` (published records: `python -m repro.collect.publish "
            "--rekey`)")


def contains(commit: Optional[str], change: Change, repo: Path = ROOT) -> bool:
    """Whether the code at `commit` already had `change` (git ancestry); False when git cannot tell."""
    if not commit:
        return False
    try:
        return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", change.commit, commit],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
