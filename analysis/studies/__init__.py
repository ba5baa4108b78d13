"""Head comparison studies: a grid of fine-tuning runs, its robustness checks, and its report.

:class:`StudySpec` (spec) describes the grid; :func:`run_study` (runner) trains every pending
run and writes the report (report, aggregate); :func:`collect` merges shard directories;
robustness and shifts test trained models at other sizes and on shifted images; claims applies
the verdict rule (verdicts); pick (:func:`run_pick`) answers "which head for this backbone?".
The runs go to analysis.runtime's worker processes or, on a cluster, to one submitit job
array (cluster, jobs).
"""

from .aggregate import generalisation_gap, group_rows, mean_std, paired_differences
from .claims import CLAIMS, Claim, claim_rows, claims_markdown, claims_summary
from .cluster import StudyTask, cancel_study, study_status, submit_study, wait_study
from .collect import collect, load_records, study_records
from .frozen import clear_views, frozen_scorer, view_features
from .jobs import JOBS_FILE, RunState, read_jobs
from .lr_grid import Choice, choose_settings, default_lrs
from .onepass import add_sweep_options, one_pass_applies, sweep_pending, sweep_settings
from .pick import (
    FIT_THRESHOLD,
    JSON_KEYS,
    ROW_KEYS,
    SWEEP_KEYS,
    VARIANTS,
    candidate_heads,
    pick_rows,
    pool_for,
    resolve_train_size,
    run_pick,
)
from .pick_report import lr_rows, table_rows, write_pick
from .recommend import RULE, compare_to_best, holm, recommend
from .reevaluate import find_runs, reevaluate_runs, summarise_reevaluation
from .report import write_report
from .robustness import default_sizes, evaluate_run, evaluate_sizes
from .runner import PLACEMENT_FILE, WORKER_TARGET, prune_checkpoints, run_job, run_study
from .shifts import DIRECTIONS, SHIFT_FILE, evaluate_run_shifts, evaluate_shifts, shift_images
from .spec import KEEP, STUDY_FILE, Combo, StudySpec, combinations, parse_shard, select_shard
from .verdicts import ALPHA, VERDICTS, paired_test, verdict

__all__ = [
    "FIT_THRESHOLD", "RULE", "SWEEP_KEYS", "compare_to_best", "holm", "lr_rows",
    "resolve_train_size", "Choice", "add_sweep_options", "choose_settings", "default_lrs",
    "one_pass_applies", "sweep_pending", "sweep_settings", "find_runs", "reevaluate_runs",
    "summarise_reevaluation", "ALPHA", "CLAIMS", "DIRECTIONS", "JOBS_FILE", "JSON_KEYS", "KEEP",
    "PLACEMENT_FILE", "ROW_KEYS", "SHIFT_FILE", "STUDY_FILE", "VARIANTS", "VERDICTS",
    "WORKER_TARGET", "Claim", "Combo", "RunState", "StudySpec", "StudyTask", "cancel_study",
    "candidate_heads", "claim_rows", "claims_markdown", "claims_summary", "clear_views", "collect",
    "combinations", "default_sizes", "evaluate_run", "evaluate_run_shifts", "evaluate_shifts",
    "evaluate_sizes", "frozen_scorer", "generalisation_gap", "group_rows", "load_records",
    "mean_std", "paired_differences", "paired_test", "parse_shard", "pick_rows", "pool_for",
    "prune_checkpoints", "read_jobs", "recommend", "run_job", "run_pick", "run_study",
    "select_shard", "shift_images", "study_records", "study_status", "submit_study", "table_rows",
    "verdict", "view_features", "wait_study", "write_pick", "write_report"
]
