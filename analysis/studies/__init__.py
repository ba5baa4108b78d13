"""Head comparison studies: a grid of fine-tuning runs, its robustness checks, and its report.

:class:`StudySpec` (spec) describes the grid, its heads written as surgery head specs;
:func:`run_study` (runner) trains every pending run and writes the report (report, aggregate);
:func:`collect` merges shard directories;
robustness evaluates each trained model at other input sizes; a :class:`WorkerPool` (pool,
worker) runs the jobs in reusable worker processes.
"""

from .aggregate import generalisation_gap, group_rows, mean_std, paired_differences
from .collect import collect, load_records
from .pool import Job, JobResult, WorkerPool
from .report import write_report
from .robustness import default_sizes, evaluate_run, evaluate_sizes
from .runner import WORKER_TARGET, run_job, run_study
from .spec import STUDY_FILE, Combo, StudySpec, combinations, parse_shard, select_shard

__all__ = ["STUDY_FILE", "WORKER_TARGET", "Combo", "Job", "JobResult", "StudySpec", "WorkerPool",
           "collect", "combinations", "default_sizes", "evaluate_run", "evaluate_sizes",
           "generalisation_gap", "group_rows", "load_records", "mean_std", "paired_differences",
           "parse_shard", "run_job", "run_study", "select_shard", "write_report"]
