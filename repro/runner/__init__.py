"""The sweep runner: plans a Hydra multirun grid against the run records, runs what is missing, reports.

    repro/runner/plan.py      compose + validate every job, its identity, what to do with it (run / skip / duplicate)
    repro/runner/pool.py      the GPU pool: one process per job, CUDA_VISIBLE_DEVICES leases, failures, progress
    repro/runner/child.py     what runs inside a job's process (Hydra's run_job on the pickled job config)
    repro/runner/failures.py  the failed record a launcher writes when a job died before writing its own
    repro/runner/status.py    `repro status`: the grid, each job's status, key metric and run directory
    repro/runner/faults.py    test-only fault injection (REPRO_TEST_FAULTS), for the reliability tests

The Hydra launcher plugins that use these live in hydra_plugins/repro_launcher/ (gpu_pool, slurm, slurm_local).
Commands: docs/runner.md.
"""
