"""A run resolved once: its config, its method classes, what it needs, and its stage identities.

    run = resolve(cfg)            # run.cfg, run.prunes, run.needs_calibration, run.prune_id, run.identity ...

Stages and their identities (each a SHA-256 prefix of canonical JSON, repro/record.py):
- **prune**   `prune_id`: model (its config and the content fingerprint of local weights), calibration (config and
  local-file fingerprint, only when the method calibrates), score, allocation, pattern, engine, sparsity, seed, and
  the versions of code changes that changed this config's numbers (repro/numerics.py; absent when none apply).
  The pruned model is stored under `results/pruned/<prune_id>/` (repro/store.py) and reused by every run of it.
- **recover** `recover_id`: the prune id + the recovery config (its work folder: `results/recovered/<recover_id>/`).
- **evaluate** `identity`: everything above + the evaluation config and the evaluation data fingerprints; it names
  the record, `results/runs/<identity>/result.json`.
A dense run has no prune stage; a run without recovery (`recovery=none`) has no recover stage; a recovery class
that declares `prunes_itself = True` (it prunes during its own rounds) gets the dense model and no prune stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from repro import record as rec
from repro.config import RunConfig, load_run_config, to_plain

PRUNE_KEYS = ("model", "calib", "score", "allocation", "pattern", "engine", "sparsity", "seed",
              "objectives")       # multi-objective runs only (absent from single-objective identity fields)


@dataclass(frozen=True)
class Run:
    cfg: RunConfig
    scorer: type
    allocator: type
    recovery: type
    prunes: bool                   # the scorer removes weights (False for the dense reference)
    prunes_itself: bool            # the recovery prunes during its own rounds: no separate prune stage
    needs_calibration: bool
    fields: dict                   # identity fields: config + input fingerprints
    prune_id: Optional[str]
    recover_id: Optional[str]
    identity: str

    @property
    def prune_stage(self) -> bool:
        return self.prunes and not self.prunes_itself

    @property
    def recovers(self) -> bool:
        return self.cfg.recovery.name != "none"

    def pruned_dir(self) -> Path:
        from repro.store import stored_dir

        return stored_dir(self.cfg.paths.results, self.prune_id)

    def recovered_dir(self) -> Path:
        return Path(self.cfg.paths.results) / "recovered" / self.recover_id

    def run_dir(self) -> Path:
        return rec.run_dir(self.cfg.paths.results, self.identity)


def identity_fields(cfg: RunConfig, needs_calib: bool, prunes: bool) -> dict:
    from repro.fingerprint import input_fingerprints
    from repro.numerics import run_numerics

    plain = to_plain(cfg)
    fields = rec.identity_fields(plain, dense=not prunes, needs_calib=needs_calib, inputs=input_fingerprints(plain))
    numerics = run_numerics(plain, prunes)
    if numerics:                    # code changes that changed this config's numbers (repro/numerics.py)
        fields["numerics"] = numerics
    return fields


def _stage_numerics(fields: dict, stage: str) -> dict:
    numerics = fields.get("numerics", {}).get(stage)
    return {"numerics": {stage: numerics}} if numerics else {}


def prune_fields(fields: dict) -> dict:
    inputs = {k: v for k, v in fields.get("inputs", {}).items() if k.split(".")[0] in ("model", "calib")}
    out = {**{k: fields[k] for k in PRUNE_KEYS if k in fields}, **_stage_numerics(fields, "prune")}
    return {**out, "inputs": inputs} if inputs else out


def recover_fields(fields: dict, prune_id) -> dict:
    """What defines a recover stage: the pruned model, the recovery config and the content of its local data."""
    inputs = {k: v for k, v in fields.get("inputs", {}).items() if k.startswith("recovery.")}
    out = {"prune_id": prune_id, "recovery": fields.get("recovery"), **_stage_numerics(fields, "recover")}
    if "recovery_model" in fields:          # e.g. "slim": the adapter is trained on the physically smaller model
        out["recovery_model"] = fields["recovery_model"]
    return {**out, "inputs": inputs} if inputs else out


def resolve(cfg) -> Run:
    """Validate (if needed) and resolve a config into its `Run`; pure (reads only input fingerprints)."""
    from repro.prune.pipeline import needs_calibration
    from repro.registry import method_class

    cfg = cfg if isinstance(cfg, RunConfig) else load_run_config(cfg)
    scorer = method_class("score", cfg.score.name)
    recovery = method_class("recovery", cfg.recovery.name)
    needs_calib = needs_calibration(cfg)
    fields = identity_fields(cfg, needs_calib, scorer.prunes)
    if slims_before_recovery(cfg, scorer, recovery):
        fields["recovery_model"] = "slim"    # the numbers differ from an adapter on the zeroed model: a new identity
    prune_id = rec.identity_of_fields(prune_fields(fields)) if scorer.prunes else None
    recover_id = (rec.identity_of_fields(recover_fields(fields, prune_id)) if cfg.recovery.name != "none" else None)
    return Run(cfg=cfg, scorer=scorer, allocator=method_class("allocation", cfg.allocation.name),
               recovery=recovery, prunes=scorer.prunes, prunes_itself=bool(getattr(recovery, "prunes_itself", False)),
               needs_calibration=needs_calib, fields=fields, prune_id=prune_id, recover_id=recover_id,
               identity=rec.identity_of_fields(fields))


def slims_before_recovery(cfg, scorer, recovery) -> bool:
    """A structured prune is cut to its physically smaller model before a recovery that asks for it
    (`Recovery.slims_structured`: LoRA/DoRA, whose adapters would otherwise grow the removed heads and channels
    back, and whose DoRA norms divide by the zero rows). The paper's recovery starts from that smaller model too."""
    return bool(scorer.prunes and cfg.pattern.name == "structured" and getattr(recovery, "slims_structured", False))


def run_identity(cfg) -> str:
    """The identity of a run (its record folder name under results/runs)."""
    return resolve(cfg).identity
