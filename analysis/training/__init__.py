"""Fine-tuning: a swapped model trained on in-memory data, with a run directory to resume from.

Reading order for one run: :class:`TrainConfig` (config) -> :func:`train` (loop: epochs, steps,
checkpoints, the final test) -> the pieces it assembles (parts: data, model, optimiser, sampler)
-> one optimiser step and evaluation (step) -> what is written (rundir, checkpoints) -> DDP under
torchrun (distributed).
"""

from .checkpoints import read_checkpoint, save_checkpoint
from .config import OPTIMIZERS, REGIMES, TrainConfig, config_from_record, load_run_data, run_name
from .distributed import DistInfo
from .loop import train
from .model import build_model, build_optimizer, model_costs, resolve_system, set_regime
from .options import add_training_options, config_from_args, config_values
from .rundir import METRIC_COLUMNS, RUN_FILES
from .step import NonFiniteLossError, RunningLoss, TrainStep, evaluate, lr_factor, peak_mem_mb

__all__ = ["METRIC_COLUMNS", "OPTIMIZERS", "REGIMES", "RUN_FILES", "DistInfo",
           "NonFiniteLossError", "RunningLoss", "TrainConfig", "TrainStep", "add_training_options",
           "build_model", "config_from_args", "config_from_record", "config_values",
           "build_optimizer", "evaluate", "load_run_data", "lr_factor", "model_costs",
           "peak_mem_mb", "read_checkpoint", "resolve_system", "run_name", "save_checkpoint",
           "set_regime", "train"]
