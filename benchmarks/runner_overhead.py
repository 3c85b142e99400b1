"""Runner overhead per job: what the gpu_pool launcher adds around each run (Hydra startup and composition of
every job's config, validation, process start, record write), on a 20-job sweep of a trivial job.

    .venv/bin/python benchmarks/runner_overhead.py                       # forkserver (the default start method)
    .venv/bin/python benchmarks/runner_overhead.py --start-methods forkserver spawn --jobs 20

The sweep is real: `python -m repro.run -m hydra/launcher=gpu_pool hydra.launcher.gpus=[]
hydra.launcher.max_parallel=1 env=offline model=tiny-llama model.seqlen=128 score=magnitude eval.ppl.max_windows=1
seed=0..N-1`, one job at a time (so the overhead is not hidden by parallelism). Figures:
  * sweep wall: the whole command, from `python` start to exit;
  * in-run time: the sum of each record's `timings.total_s` (inside `repro.run.execute`: model load, pruning,
    evaluation — the work itself, not the runner's);
  * overhead/job = (sweep wall - in-run time) / jobs: everything else, the runner's whole cost, amortised;
  * planning: composing and validating all job configs before the first job starts (`plan_s` in the manifest);
  * per-job process overhead: median of (job wall seen by the launcher - its `total_s`): process start, Hydra's
    run_job, config validation, record write;
  * startup (Python, imports, Hydra, plugin discovery — before planning), launcher time between jobs, teardown.
The machine's load average is printed too: on a shared machine every figure scales with it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOB = ["env=offline", "model=tiny-llama", "model.seqlen=128", "score=magnitude", "eval.ppl.max_windows=1"]


def run_sweep(n_jobs: int, start_method: str, workdir: Path) -> dict:
    results, sweep = workdir / f"results-{start_method}", workdir / f"sweep-{start_method}"
    cmd = [sys.executable, "-m", "repro.run", "-m", "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[]",
           "hydra.launcher.max_parallel=1", "hydra.launcher.progress=false",
           f"hydra.launcher.start_method={start_method}", *JOB, "seed=" + ",".join(map(str, range(n_jobs))),
           f"paths.results={results}", f"hydra.sweep.dir={sweep}"]
    t0, launched = time.perf_counter(), time.time()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall, exited = time.perf_counter() - t0, time.time()
    if done.returncode != 0:
        raise SystemExit(f"sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in results.glob("runs/*/result.json")]
    assert len(records) == n_jobs and all(r["status"] == "ok" for r in records)
    in_run = {r["identity"]: r["timings"]["total_s"] for r in records}
    events = [json.loads(line) for line in (sweep / "repro_events.jsonl").read_text().splitlines()]
    job_wall = [e["wall_s"] for e in events if e["event"] == "end"]
    per_job_process = [e["wall_s"] - in_run[e["identity"]] for e in events if e["event"] == "end"]
    plan_s = json.loads((sweep / "repro_sweep.json").read_text())["plan_s"]
    first_start = min(e["t"] for e in events if e["event"] == "start")
    last_end = max(e["t"] for e in events if e["event"] == "end")
    between = (last_end - first_start) - sum(job_wall)      # the launcher's own time between jobs
    return {"start_method": start_method, "jobs": n_jobs, "sweep_wall_s": wall, "in_run_s": sum(in_run.values()),
            "overhead_per_job_s": (wall - sum(in_run.values())) / n_jobs, "plan_s": plan_s,
            "plan_per_job_s": plan_s / n_jobs, "job_wall_median_s": statistics.median(job_wall),
            "process_overhead_median_s": statistics.median(per_job_process),
            "first_job_process_overhead_s": per_job_process[0],
            "startup_s": first_start - launched - plan_s, "between_jobs_s": between, "teardown_s": exited - last_end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--start-methods", nargs="+", default=["forkserver"], choices=["forkserver", "spawn"])
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="repro-runner-bench-") as tmp:
        for method in args.start_methods:
            r = run_sweep(args.jobs, method, Path(tmp))
            print(f"\n[{method}] {r['jobs']} jobs, one at a time")
            print(f"  sweep wall            {r['sweep_wall_s']:7.2f} s")
            print(f"  in-run time (sum)     {r['in_run_s']:7.2f} s")
            print(f"  overhead per job      {r['overhead_per_job_s']:7.3f} s   (target < 2 s)")
            print(f"  planning              {r['plan_s']:7.2f} s  ({r['plan_per_job_s']:.3f} s/job: compose + validate)")
            print(f"  process overhead/job  {r['process_overhead_median_s']:7.3f} s median "
                  f"(first job {r['first_job_process_overhead_s']:.2f} s: starts the forkserver)")
            print(f"  job wall median       {r['job_wall_median_s']:7.3f} s")
            print(f"  startup (python, imports, Hydra, before planning) {r['startup_s']:.2f} s; launcher time "
                  f"between jobs {r['between_jobs_s']:.2f} s in all; teardown {r['teardown_s']:.2f} s", flush=True)
            print("JSON " + json.dumps(r))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
