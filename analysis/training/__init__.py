"""Fine-tuning: a swapped model trained on in-memory data, with a run directory to resume from.

Reading order for one run: :class:`TrainConfig` (config) -> :func:`train` (launch: the run
directory claimed, a resume checked) -> the loop (loop) -> what it assembles (parts: data,
model, optimiser, sampler) -> one step and evaluation (step) -> what is written (rundir,
checkpoints) -> DDP under torchrun (distributed). Frozen-backbone epochs train the head on
cached features (cached, shared_cache); sweep trains many heads in one pass. Cluster launch:
cluster, cluster_job and scheduler.
"""

from .cached import cache_decision, feature_requests, head_costs, merge_requests
from .checkpoints import read_checkpoint, save_checkpoint
from .cluster import (
    CLUSTER_EXTRA,
    LAUNCHERS,
    SlurmOptions,
    add_launcher_options,
    has_submitit,
    job_environment,
    make_executor,
    parse_mem,
    parse_time,
    refuse_slurm_flags,
    require_submitit,
    slurm_options_from_args,
)
from .cluster_job import (
    ClusterJobError,
    FinetuneJob,
    finetune_logs,
    job_error_line,
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
from .lock import RunInUseError, lock_run_dir, run_owner
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
from .scheduler import (
    SLURM_LIVE,
    cancel_slurm_jobs,
    process_alive,
    slurm_end_states,
    slurm_queue,
    stop_process,
)
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

__all__ = ["CLUSTER_EXTRA", "FEATURE_CACHE", "FEATURE_DTYPES", "LAUNCHERS", "METRIC_COLUMNS",
           "OPTIMIZERS", "REGIMES", "RESUME_FREE", "RUN_FILES", "SLURM_LIVE", "ClusterJobError",
           "DistInfo", "FinetuneJob", "NonFiniteLossError", "RunInUseError", "RunningLoss",
           "SlurmOptions", "TrainConfig", "TrainStep", "add_launcher_options",
           "add_model_options", "add_num_classes", "add_training_options", "build_model", "build_optimizer", "cache_decision",
           "cancel_slurm_jobs", "config_from_args", "config_from_record", "config_values",
           "evaluate", "feature_requests", "finetune_logs", "given_config_values", "has_submitit",
           "head_costs", "job_environment", "job_error_line", "load_run_data", "lock_run_dir",
           "lr_factor", "make_executor", "merge_requests", "model_costs", "parse_mem",
           "parse_time", "peak_mem_mb", "process_alive", "read_checkpoint", "read_run_config",
           "refuse_slurm_flags", "require_submitit", "reset_peak_mem", "resolve_system",
           "run_name", "run_owner", "run_path", "save_checkpoint", "set_regime",
           "slurm_end_states", "slurm_options_from_args", "slurm_queue", "stop_process",
           "submit_finetune", "timm_kwargs", "train", "wait_finetune", "warm_feature_caches"]
