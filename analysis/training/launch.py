"""How a run starts: :func:`train` takes a config (or a run directory to resume), claims the run
directory and hands over to the loop (analysis.training.loop).

The run directory belongs to one process for the whole run (analysis.runtime.run_lock); a second
one gets :class:`RunInUseError` naming the owner. A new run is checked, its data read and its
model built before it touches the directory: it replaces an old run (``overwrite``) and writes
``config.json`` only after its first optimiser step, and if it fails before its first checkpoint
it removes what it wrote. A resumed run must end as the uninterrupted one would, so options
that differ from its config are refused (analysis.training.resume).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from ..runtime import lock_run_dir
from . import distributed
from .config import TrainConfig, run_name
from .distributed import DistInfo
from .loop import RunLoop, StepHook
from .model import resolve_system
from .resume import read_resume_state, read_run_config
from .rundir import refuse_taken, run_path
from .step import reset_peak_mem

__all__ = ["train"]


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          options: dict[str, Any] | None = None, data: Any = None, dist: DistInfo | None = None,
          on_step: StepHook | None = None, on_epoch: StepHook | None = None,
          on_start: StepHook | None = None) -> dict[str, Any]:
    """Run (or resume) one fine-tuning run and return its summary (also in ``summary.json``).

    The run directory is locked for the run (a second process gets :class:`RunInUseError`), and a
    new run replaces an old one (``overwrite``) only after its first optimiser step. Started by
    torchrun (``WORLD_SIZE`` > 1) without ``dist``, it joins the process group itself (gloo on CPU,
    nccl on CUDA) and leaves it at the end. Raises :class:`NonFiniteLossError` when the loss or the
    weights become NaN or inf; ``last.pt`` then still holds the last good state.

    Args:
        resume: a run directory to continue from its ``last.pt`` (a finished run: its summary).
        options: the training options given with ``resume``; any that differs from the run's
            config is refused (analysis.training.resume).
        data: a DataSplits the caller (a study) already holds, used instead of loading.
        on_start: called with ``{status, run_dir, epoch, step, epochs, steps_per_epoch}`` once the
            run is assembled (status ``new``, ``resumed``, ``restarted`` or ``finished``).
        on_step: called with ``{epoch, step, global_step, loss, model, optimizer}`` after every
            optimiser step; it may raise to stop the run.
        on_epoch: called with each epoch's metrics row.
    """
    if resume is not None:
        run_dir = Path(resume)
        cfg = read_run_config(run_dir, options)
    elif config is None:
        raise ValueError("train() needs a TrainConfig or resume=RUN_DIR")
    elif options:
        raise ValueError("options= applies with resume= only; set them in the TrainConfig")
    else:
        cfg = config
        cfg.check()
        run_dir = run_path(cfg.out, cfg.name or run_name(cfg))
    system = resolve_system(cfg)
    owned = dist is None and distributed.launched()
    if dist is None:
        dist, system["device"] = distributed.setup(system["device"])
    hooks = {"step": on_step, "epoch": on_epoch, "start": on_start}
    try:
        with _claim(run_dir, dist, fresh=resume is None, overwrite=cfg.overwrite):
            return _start(cfg, run_dir, resume is not None, data, dist, system, hooks)
    finally:
        if owned:
            distributed.shutdown()


@contextmanager
def _claim(run_dir: Path, dist: DistInfo, *, fresh: bool, overwrite: bool) -> Iterator[None]:
    """Hold the run directory's lock (rank 0) and check a new run may start there; every rank
    raises when rank 0 could not."""
    with ExitStack() as stack:
        err: Exception | None = None
        if dist.is_main:
            try:
                stack.enter_context(lock_run_dir(run_dir, create=fresh))
                if fresh:
                    refuse_taken(run_dir, overwrite)
            except (ValueError, OSError) as e:
                err = e
        if dist.sum(float(err is not None)):
            if err is not None:
                raise err
            raise ValueError(f"rank 0 could not take the run directory {str(run_dir)!r} (see "
                             "its error)")
        yield


def _start(cfg: TrainConfig, run_dir: Path, resumed: bool, data: Any, dist: DistInfo,
           system: dict[str, Any], hooks: dict[str, StepHook | None]) -> dict[str, Any]:
    """Read what a resumed run left (a finished one returns its summary), assemble, fit."""
    state: dict[str, Any] | None = None
    if resumed:
        summary, state = read_resume_state(run_dir)
        if summary is not None:
            if hooks["start"] is not None:
                hooks["start"]({"status": "finished", "run_dir": run_dir})
            return summary
    reset_peak_mem(system["device"])
    run = RunLoop(cfg, run_dir, state, data, dist, system, hooks, fresh=not resumed)
    if hooks["start"] is not None:
        hooks["start"](run.position())
    return run.fit()
