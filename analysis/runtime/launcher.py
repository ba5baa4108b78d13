"""The launcher options a user gives: ``--launcher`` and the ``--slurm-*`` flags.

``--launcher local`` runs here, as without a cluster; ``slurm`` submits to Slurm through
submitit; ``submitit-local`` goes through the same submission code with submitit's local
executor (jobs are processes of this machine), to dry-run a cluster command. The flags are
defined once here for tools/finetune.py (one multi-node job) and tools/compare_heads.py (a job
array, one job per run); :class:`SlurmOptions` is what they ask for, and
analysis.runtime.submitit_glue turns it into an executor.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from surgery import parse_options
from surgery.ranges import POSITIVE_INT

__all__ = ["CLUSTER_EXTRA", "LAUNCHERS", "SlurmOptions", "add_launcher_options", "parse_mem",
           "parse_time", "refuse_slurm_flags", "slurm_options_from_args"]

LAUNCHERS = ("local", "slurm", "submitit-local")
CLUSTER_EXTRA = "pip install 'headswap[cluster]' (or: pip install submitit)"
_DEFAULT_TIME = "4:00:00"
# sbatch options our own flags set (or submitit needs): --slurm-option must not override them
_RESERVED = {"partition": "--slurm-partition", "account": "--slurm-account",
             "time": "--slurm-time", "mem": "--slurm-mem", "nodes": "--slurm-nodes",
             "ntasks_per_node": "--slurm-tasks-per-node", "gpus_per_node": "the GPU flags",
             "cpus_per_task": "the CPU flags", "array": "--slurm-array-parallelism",
             "output": None, "error": None, "job_name": None, "signal": None, "open_mode": None,
             "wrap": None}


@dataclass
class SlurmOptions:
    """What each job asks for: ``time_min`` its time limit (minutes), ``mem`` Slurm's ``--mem``
    (``16G``), ``options`` further sbatch options (``qos``, ``constraint``, ...), ``setup``
    shell commands run before the job (module loads, activating an environment)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 240
    mem: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    array_parallelism: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), setup=list(self.setup))


def parse_time(text: str) -> int:
    """A Slurm time limit in minutes: ``90``, ``1:30:00``, ``2-00:00:00``, ``1-12``, ``45:00``
    (minutes:seconds, as Slurm reads it); ValueError otherwise."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--slurm-time expects minutes or [D-]HH:MM:SS (e.g. 90, 4:00:00, "
                         f"1-00:00:00), got {text!r}")
    days, a, b, c = (int(g) if g is not None else -1 for g in m.groups())
    if days >= 0:  # D-H, D-H:M, D-H:M:S
        minutes = days * 1440 + a * 60 + max(b, 0) + (max(c, 0) + 59) // 60
    elif c >= 0:  # H:M:S
        minutes = a * 60 + b + (c + 59) // 60
    elif b >= 0:  # M:S
        minutes = a + (b + 59) // 60
    else:
        minutes = a
    if minutes < 1:
        raise ValueError(f"--slurm-time must be at least one minute, got {text!r}")
    return minutes


def parse_mem(text: str) -> str:
    """Slurm's ``--mem``: a number with an optional unit K, M, G or T (``16G``, ``500M``)."""
    m = re.fullmatch(r"(\d+)\s*([KMGTkmgt])?[Bb]?", text.strip())
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"--slurm-mem expects a size such as 16G or 500M, got {text!r}")
    return m.group(1) + (m.group(2) or "M").upper()


def _slurm_extra(items: list[str]) -> dict[str, Any]:
    """``--slurm-option KEY=VALUE`` items as sbatch options (``mail-type`` = ``mail_type``)."""
    keyed = []
    for item in items:
        key, sep, value = item.partition("=")
        keyed.append(key.strip().replace("-", "_") + sep + value)
    options = parse_options(keyed, "--slurm-option")
    for key in options:
        if key in _RESERVED:
            way = f"use {_RESERVED[key]}" if _RESERVED[key] else "headswap sets it itself"
            raise ValueError(f"--slurm-option {key.replace('_', '-')}=... is not allowed: {way}")
    return options


_positive = POSITIVE_INT.arg_type("a whole number >= 1")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_launcher_options(parser: argparse.ArgumentParser, *, study: bool) -> None:
    """``--launcher`` and the ``--slurm-*`` flags: per run for a study (``study``), per job
    (nodes, GPUs per node) for one fine-tune."""
    g = parser.add_argument_group("cluster (through submitit: the optional extra 'cluster')")
    g.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="local: here; slurm: submit to Slurm" + (" as one job array, a job per run"
                        if study else " as one (multi-node) DDP job") + "; submitit-local: the same "
                        "submission, as processes of this machine (a dry run)")
    g.add_argument("--slurm-partition", default=None, help="sbatch --partition (default: the "
                   "cluster's default partition)")
    g.add_argument("--slurm-account", default=None, help="sbatch --account (whom the time is "
                   "charged to)")
    g.add_argument("--slurm-time", default=_DEFAULT_TIME, metavar="[D-]HH:MM:SS",
                   help=f"time limit of each job, or minutes (default {_DEFAULT_TIME})")
    g.add_argument("--slurm-mem", default=None, help="memory per node (e.g. 32G; default: the "
                   "partition's)")
    if study:
        g.add_argument("--slurm-gpus-per-run", type=_count, default=1, metavar="G",
                       help="GPUs per run (default 1; 0 on a CPU partition)")
        g.add_argument("--slurm-cpus-per-run", type=_positive, default=None, metavar="C",
                       help="CPU cores per run; also its torch threads (default: the partition's)")
        g.add_argument("--slurm-array-parallelism", type=_positive, default=None, metavar="N",
                       help="at most N runs of the array at once (default: as many as Slurm allows)")
    else:
        g.add_argument("--slurm-nodes", type=_positive, default=1, metavar="N")
        g.add_argument("--slurm-gpus-per-node", type=_count, default=1, metavar="G",
                       help="GPUs per node, one DDP process each (default 1; 0: CPU processes)")
        g.add_argument("--slurm-tasks-per-node", type=_positive, default=None, metavar="T",
                       help="DDP processes per node (default: the GPUs per node, at least 1)")
        g.add_argument("--slurm-cpus-per-task", type=_positive, default=None, metavar="C",
                       help="CPU cores per process (default: the partition's)")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, repeatable (qos=high, constraint=a100, "
                        "exclude=node3, mail-type=END)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="'CMD; ...'",
                   help="shell commands run before each job, repeatable ('module load cuda; "
                        "source ~/venv/bin/activate')")


def slurm_options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """The SlurmOptions of the parsed flags (a study's per-run flags or a fine-tune's)."""
    opts = SlurmOptions(partition=args.slurm_partition, account=args.slurm_account,
                        time_min=parse_time(args.slurm_time),
                        mem=parse_mem(args.slurm_mem) if args.slurm_mem else None,
                        options=_slurm_extra(args.slurm_option),
                        setup=tuple(s.strip() for s in args.slurm_setup if s.strip()))
    if hasattr(args, "slurm_gpus_per_run"):
        opts.gpus_per_node = args.slurm_gpus_per_run
        opts.cpus_per_task = args.slurm_cpus_per_run
        opts.array_parallelism = args.slurm_array_parallelism
    else:
        opts.nodes = args.slurm_nodes
        opts.gpus_per_node = args.slurm_gpus_per_node
        opts.tasks_per_node = args.slurm_tasks_per_node or max(1, args.slurm_gpus_per_node)
        opts.cpus_per_task = args.slurm_cpus_per_task
    return opts


def refuse_slurm_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ValueError when ``--slurm-*`` flags were given with ``--launcher local`` (they would be
    ignored)."""
    if args.launcher != "local":
        return
    given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
             if k.startswith("slurm_") and v != parser.get_default(k)]
    if given:
        raise ValueError(f"{', '.join(given)} applies to --launcher slurm or submitit-local; "
                         "add --launcher slurm, or drop it to run here")
