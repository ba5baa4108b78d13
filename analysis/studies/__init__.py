"""Head comparison studies: a grid of fine-tuning runs, its robustness checks, and its report.

:class:`StudySpec` (spec) describes the grid, its heads written as surgery head specs;
:func:`run_study` (runner) trains every pending run and writes the report (report, aggregate);
:func:`collect` merges shard directories;
robustness evaluates each trained model at other input sizes; a :class:`WorkerPool` (pool,
worker) runs the jobs in reusable worker processes; on a cluster :func:`submit_study` and
:func:`wait_study` (cluster) submit them as one job array through submitit and follow them
(jobs); pick (:func:`run_pick`) answers "which head for this backbone?" with every applicable
head on one feature cache.
"""

from .aggregate import generalisation_gap, group_rows, mean_std, paired_differences
from .cluster import StudyTask, cancel_study, study_status, submit_study, wait_study
from .collect import collect, load_records
from .jobs import JOBS_FILE, RunState, read_jobs
from .pick import (
    JSON_KEYS,
    ROW_KEYS,
    VARIANTS,
    candidate_heads,
    pick_rows,
    pool_for,
    recommend,
    run_pick,
    table_rows,
    write_pick,
)
from .pool import Job, JobResult, WorkerPool
from .report import write_report
from .robustness import default_sizes, evaluate_run, evaluate_sizes
from .runner import PLACEMENT_FILE, WORKER_TARGET, run_job, run_study
from .spec import STUDY_FILE, Combo, StudySpec, combinations, parse_shard, select_shard

__all__ = ["JOBS_FILE", "JSON_KEYS", "PLACEMENT_FILE", "ROW_KEYS", "STUDY_FILE", "VARIANTS",
           "WORKER_TARGET", "Combo", "Job", "JobResult", "RunState", "StudySpec", "StudyTask",
           "WorkerPool", "cancel_study", "candidate_heads", "collect", "combinations",
           "default_sizes", "evaluate_run", "evaluate_sizes", "generalisation_gap", "group_rows",
           "load_records", "mean_std", "paired_differences", "parse_shard", "pick_rows",
           "pool_for", "read_jobs", "recommend", "run_job", "run_pick", "run_study",
           "select_shard", "study_status", "submit_study", "table_rows", "wait_study",
           "write_pick", "write_report"]
