"""headswap.analysis.runtime: how things run in parallel, and what happens when they are killed.

The one room for process plumbing; every other subpackage uses it and it uses none of them.

- worker life: :class:`WorkerPool` (worker_pool; reusable workers that import their target
  once, replaced when they die) and :func:`die_with_parent` / :func:`output_to` (worker);
  :func:`map_unordered` and :func:`process_pool` (process_pool) for functions of this package.
- locks: :func:`lock_run_dir` (run_lock; one process per run directory, with an owner record
  a requeued Slurm job takes over) and :func:`exclusive_lock` (cache_lock; build a cache once).
- budgets and signals: :func:`cpu_budget` / :func:`wall_budget` (budgets),
  :func:`ignore_interrupts` / :func:`sigterm_as_interrupt` (signals); :func:`run_command`
  (commands) runs a command to its end, timed.
- clusters: the ``--launcher`` / ``--slurm-*`` options (launcher), submitit's executors and
  requeueing (submitit_glue), what Slurm's queue and the process table say (scheduler).
- sweeps: a resumable JSONL store, a pool with a per-item budget, and the report files of the
  zoo sweeps (zoo_sweep; the sweeps themselves are in analysis.sweeps).
"""

from .budgets import (
    BUDGET_KINDS,
    CpuBudgetExceeded,
    WallBudgetExceeded,
    budget,
    cpu_budget,
    one_torch_thread,
    wall_budget,
)
from .cache_lock import exclusive_lock
from .commands import CommandRun, child_environment, run_command
from .launcher import (
    CLUSTER_EXTRA,
    LAUNCHERS,
    SlurmOptions,
    add_launcher_options,
    parse_mem,
    parse_time,
    refuse_slurm_flags,
    slurm_options_from_args,
)
from .process_pool import START_METHODS, can_fork, cpu_cores, map_unordered, process_pool
from .run_lock import (
    LOCK_FILE,
    RunInUseError,
    describe_owner,
    lock_owner,
    lock_run_dir,
    read_owner,
    run_owner,
)
from .scheduler import (
    SLURM_LIVE,
    cancel_slurm_jobs,
    process_alive,
    slurm_end_states,
    slurm_queue,
    stop_process,
    where_this_runs,
)
from .signals import ignore_interrupts, sigterm_as_interrupt, worker_signals
from .submitit_glue import (
    export_torch_distributed,
    has_submitit,
    job_environment,
    job_error_line,
    make_executor,
    requeue,
    require_submitit,
)
from .worker import die_with_parent, output_to
from .worker_pool import Job, JobResult, WorkerPool
from .zoo_sweep import ItemBudget, JsonlStore, SweepRun, command_line, run_sweep, write_files

__all__ = [
    "BUDGET_KINDS", "CLUSTER_EXTRA", "LAUNCHERS", "LOCK_FILE", "SLURM_LIVE", "START_METHODS",
    "CommandRun", "CpuBudgetExceeded", "ItemBudget", "Job", "JobResult", "JsonlStore",
    "RunInUseError", "SlurmOptions", "SweepRun", "WallBudgetExceeded", "WorkerPool",
    "add_launcher_options", "budget", "can_fork", "cancel_slurm_jobs", "child_environment",
    "command_line", "cpu_budget", "cpu_cores", "describe_owner", "die_with_parent",
    "exclusive_lock", "export_torch_distributed", "has_submitit", "ignore_interrupts",
    "job_environment", "job_error_line", "lock_owner", "lock_run_dir", "make_executor",
    "map_unordered", "one_torch_thread", "output_to", "parse_mem", "parse_time", "process_alive",
    "process_pool", "read_owner", "refuse_slurm_flags", "requeue", "require_submitit",
    "run_command", "run_owner", "run_sweep", "sigterm_as_interrupt", "slurm_end_states",
    "slurm_options_from_args", "slurm_queue", "stop_process", "wall_budget", "where_this_runs",
    "worker_signals", "write_files"
]
