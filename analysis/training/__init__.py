"""Fine-tuning: a swapped model trained on in-memory data, with a run directory to resume from.

Reading order for one run: :class:`TrainConfig` (config) -> :func:`train` (launch: the run
directory claimed, a resume checked) -> the loop (loop) -> what it assembles (parts: data,
model, optimiser, sampler) -> one step and evaluation (step) -> what is written (rundir,
checkpoints) -> DDP under torchrun (distributed). Frozen-backbone epochs train the head on
cached features (cached, shared_cache); sweep trains many heads in one pass; a fine-tune as a
multi-node DDP job: cluster_job. The process plumbing (locks, launchers, Slurm) is analysis.runtime.
"""

from .cached import cache_decision, feature_requests, head_costs, merge_requests
from .checkpoints import read_checkpoint, save_checkpoint
from .cluster_job import (
    ClusterJobError,
    FinetuneJob,
    finetune_logs,
    submit_finetune,
    wait_finetune,
)
from .config import (
    FEATURE_CACHE,
    FEATURE_DTYPES,
    OPTIMIZERS,
    REGIMES,
    TrainConfig,
    config_from_record,
    load_run_data,
    run_name,
)
from .distributed import DistInfo
from .launch import train
from .model import (
    build_model,
    build_optimizer,
    model_costs,
    resolve_system,
    set_regime,
    timm_kwargs,
)
from .options import (
    add_model_options,
    add_num_classes,
    add_training_options,
    config_from_args,
    config_values,
    given_config_values,
)
from .resume import RESUME_FREE, read_run_config
from .rundir import METRIC_COLUMNS, RUN_FILES, run_path
from .shared_cache import warm_feature_caches
from .step import (
    NonFiniteLossError,
    RunningLoss,
    TrainStep,
    evaluate,
    lr_factor,
    peak_mem_mb,
    reset_peak_mem,
)

__all__ = [
    "FEATURE_CACHE", "FEATURE_DTYPES", "METRIC_COLUMNS", "OPTIMIZERS", "REGIMES", "RESUME_FREE",
    "RUN_FILES", "ClusterJobError", "DistInfo", "FinetuneJob", "NonFiniteLossError", "RunningLoss",
    "TrainConfig", "TrainStep", "add_model_options", "add_num_classes", "add_training_options", "build_model", "build_optimizer",
    "cache_decision", "config_from_args", "config_from_record", "config_values", "evaluate",
    "feature_requests", "finetune_logs", "given_config_values", "head_costs", "load_run_data",
    "lr_factor", "merge_requests", "model_costs", "peak_mem_mb", "read_checkpoint",
    "read_run_config", "reset_peak_mem", "resolve_system", "run_name", "run_path",
    "save_checkpoint", "set_regime", "submit_finetune", "timm_kwargs", "train", "wait_finetune",
    "warm_feature_caches"
]
