"""TEST-ONLY fault injection for the runner's reliability tests. Never set it in a user config.

    REPRO_TEST_FAULTS='{"seed=3": "raise", "seed=4": "sigkill", "seed=5": "sleep:30"}'

A job launched by the gpu_pool launcher whose overrides contain a key gets that fault *inside* the run
(`repro.run._run_steps`: the config is validated, the identity is locked, the run directory exists):
`raise` raises RuntimeError (the run records its own failure), `sigkill` kills the job's process (no record —
the launcher must write it), `sleep:<s>` sleeps (so a test can interrupt a sweep mid-run). Without the
environment variable this module does nothing.
"""
from __future__ import annotations

import json
import os
import signal
import time

ENV_VAR = "REPRO_TEST_FAULTS"


def fault_for(overrides) -> str | None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return None
    return next((fault for key, fault in json.loads(spec).items() if key in overrides), None)


def install(overrides) -> None:
    fault = fault_for(overrides)
    if fault is None:
        return
    import repro.run as run_module

    original = run_module._run_steps

    def _run_steps_with_fault(run, record, out_dir):
        if fault == "raise":
            raise RuntimeError(f"injected test fault ({ENV_VAR})")
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.startswith("sleep:"):
            time.sleep(float(fault.split(":", 1)[1]))
        return original(run, record, out_dir)

    run_module._run_steps = _run_steps_with_fault
