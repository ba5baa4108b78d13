"""One fine-tune as a cluster job: every task of the job is one DDP process.

:func:`submit_finetune` checks the run as tools/finetune.py would, then submits a
:class:`FinetuneJob` through submitit (analysis.runtime). In the job, submitit's
environment gives each task its rank, the world size and the first node's address;
``TorchDistributedEnvironment().export()`` puts them where torchrun would (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and :func:`train` then takes the
same distributed code path as under torchrun. When Slurm preempts the job or its time runs out,
submitit calls :meth:`FinetuneJob.checkpoint`, which requeues it to resume from the run
directory (from the last ``last.pt``; the steps after it are trained again, with the same result).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from surgery import one_line_warnings

from ..runtime import (
    SlurmOptions,
    export_torch_distributed,
    job_environment,
    job_error_line,
    make_executor,
    requeue,
    require_submitit,
)
from .config import TrainConfig, run_name
from .launch import train
from .resume import read_run_config
from .rundir import refuse_taken, run_path

__all__ = ["ClusterJobError", "FinetuneJob", "finetune_logs", "submit_finetune", "wait_finetune"]


class ClusterJobError(ValueError):
    """A submitted job failed; the message names its log. Tools exit with code 1."""

    exit_code = 1


class FinetuneJob:
    """The callable a fine-tune's job runs: a new run (``config``) or a resume (``config`` None,
    ``options`` the resume's options). A job restarted by Slurm (``SLURM_RESTART_COUNT`` > 0)
    whose run directory already holds this run resumes it instead of starting over."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None, threads: int | None = None):
        self.run_dir = str(run_dir)
        self.config = config
        self.options = dict(options or {})
        self.threads = threads

    def __call__(self) -> dict[str, Any]:
        import torch

        export_torch_distributed()
        if self.threads:
            torch.set_num_threads(self.threads)
        run_dir = Path(self.run_dir)
        with one_line_warnings():
            if self.config is not None and not self._restarted_here():
                return train(TrainConfig.from_dict(self.config))
            return train(resume=run_dir, options=self._resume_options())

    def _resume_options(self) -> dict[str, Any]:
        if self.config is None:
            return self.options
        return {k: v for k, v in self.config.items() if k not in ("out", "name", "overwrite")}

    def _restarted_here(self) -> bool:
        """Restarted by Slurm after this job's run had written its config (so it is ours)."""
        if int(os.environ.get("SLURM_RESTART_COUNT") or 0) < 1:
            return False
        try:
            read_run_config(self.run_dir, self._resume_options())
        except (ValueError, FileNotFoundError):
            return False
        return True

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """What submitit requeues when the job is preempted or times out: a resume of the run
        directory (or, before the run wrote anything, the same new run)."""
        started = (Path(self.run_dir) / "config.json").is_file()
        again = (FinetuneJob(self.run_dir, None, self._resume_options(), self.threads)
                 if started or self.config is None else self)
        return requeue(again)


def finetune_logs(run_dir: str | Path) -> Path:
    """Where a fine-tune job's logs go: ``RUN.logs/`` next to the run directory ``RUN``
    (submitit's files: each task's stdout and stderr, ``JOBID_TASK_log.out/.err``)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name}.logs"


def submit_finetune(launcher: str, slurm: SlurmOptions, config: TrainConfig | None = None, *,
                    resume: str | Path | None = None,
                    options: dict[str, Any] | None = None) -> Any:
    """Check the run (as a local one is checked before it starts) and submit it as one job of
    ``slurm.nodes`` x ``slurm.tasks_per_node`` DDP processes; returns the submitit job."""
    require_submitit(launcher)
    if resume is not None:
        run_dir = Path(resume)
        read_run_config(run_dir, options)  # refuses changed options now, not in the queue
        job = FinetuneJob(run_dir, None, options, slurm.cpus_per_task)
    elif config is None:
        raise ValueError("submit_finetune() needs a TrainConfig or resume=RUN_DIR")
    else:
        config.check()
        run_dir = run_path(config.out, config.name or run_name(config))
        config.name = run_dir.name
        refuse_taken(run_dir, config.overwrite)
        job = FinetuneJob(run_dir, asdict(config), None, slurm.cpus_per_task)
    ex = make_executor(launcher, finetune_logs(run_dir), slurm, name=run_dir.name)
    output = (finetune_logs(run_dir) / "controllers.log" if launcher == "submitit-local"
              else None)
    with job_environment(slurm.cpus_per_task, output):
        return ex.submit(job)


def wait_finetune(job: Any) -> dict[str, Any]:
    """Wait for a submitted fine-tune; its summary, or :class:`ClusterJobError` with the last
    line of its error and where its logs are."""
    error = job.exception()
    if error is None:
        return dict(job.results()[0])
    raise ClusterJobError(f"job {job.job_id} failed: {job_error_line(error)} (logs: "
                          f"{job.paths.stderr.parent})")

