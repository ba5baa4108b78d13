"""Resuming a run directory: its configuration, the options a resume may and may not change, and
where it stopped.

A resumed run must end as the uninterrupted one would, so options that would change its result
are refused where they differ from ``config.json`` (listing what differs); those that only
change how it is watched (progress bar, checkpoint frequency) apply. An unreadable ``last.pt``
is an error that says whether ``best.pt`` is intact and how to go on.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any

from surgery import one_line, read_json

from .checkpoints import is_head_only, read_checkpoint
from .config import RESUME_FREE, TrainConfig, config_from_record

__all__ = ["RESUME_FREE", "read_resume_state", "read_run_config", "resume_options"]

_NEW_RUN_ONLY = ("out", "name", "overwrite")


def read_run_config(run_dir: str | Path, options: dict[str, Any] | None = None) -> TrainConfig:
    """The configuration of the run in ``run_dir``, with the resume ``options`` applied (see
    :func:`resume_options`), checked like a new run's."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"cannot resume {str(run_dir)!r}: no config.json there (is it "
                                "a run directory written by tools/finetune.py?)")
    raw = _read_config(run_dir / "config.json")
    for f in fields(TrainConfig):
        if f.name in raw and raw[f.name] is None and f.default is not None \
                and f.default_factory is MISSING:  # type: ignore[misc]
            flag = "--" + f.name.replace("_", "-")
            raise ValueError(f"cannot resume {str(run_dir)!r}: its config.json has {f.name} = null "
                             f"(NaN or inf when it was written), so it never trained; delete it "
                             f"and start the run again with a valid {flag}")
    try:
        cfg = config_from_record(raw)
        _check_stored(cfg, run_dir)
    except TypeError as err:  # a field of the wrong type in the file
        raise ValueError(f"cannot resume {str(run_dir)!r}: its config.json holds a value of the "
                         f"wrong type ({one_line(err)}); was it edited? Start the run over with "
                         "--overwrite") from None
    cfg = resume_options(cfg, options or {}, run_dir)
    cfg.check()
    return cfg


def _read_config(path: Path) -> dict[str, Any]:
    """The ``config`` part of a run's config.json; a file cut short or damaged is a ValueError
    naming it (not the JSON parser's position alone)."""
    try:
        record = read_json(path)
        config = record["config"]
        if not isinstance(config, dict):
            raise TypeError("its 'config' is not an object")
        return dict(config)
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        why = (f"not valid JSON ({one_line(err)})" if isinstance(err, json.JSONDecodeError)
               else "it has no 'config' settings" if isinstance(err, KeyError) else one_line(err))
        raise ValueError(f"cannot resume {str(path.parent)!r}: its {path.name} is damaged or cut "
                         f"short: {why}; the run's settings cannot be recovered from it: start "
                         "the run over with --overwrite (its metrics.csv still shows what it "
                         "measured)") from None


def _check_stored(cfg: TrainConfig, run_dir: Path) -> None:
    """The stored settings pass the same checks as a new run's; a value out of range is named
    as a field of the file (it was edited or damaged), not as a command-line flag."""
    try:
        cfg.check()
    except ValueError as err:
        raise ValueError(f"cannot resume {str(run_dir)!r}: its config.json holds a setting a run "
                         f"cannot have ({one_line(err).replace('--', '')}); was the file edited? "
                         "Restore it, or start the run over with --overwrite") from None


def resume_options(cfg: TrainConfig, options: dict[str, Any], run_dir: str | Path) -> TrainConfig:
    """``cfg`` with the options of :data:`RESUME_FREE` taken from ``options``; ValueError listing
    every other option whose value differs from the run's (``epochs 2 -> 3``)."""
    given = [k for k in _NEW_RUN_ONLY if k in options]
    if given:
        flags = ", ".join("--" + k for k in given)
        raise ValueError(f"--resume continues {str(run_dir)!r} where it is: drop {flags} (they "
                         "name a new run)")
    current = asdict(cfg)
    unknown = sorted(set(options) - set(current))
    if unknown:
        raise ValueError(f"unknown training option(s) {', '.join(unknown)}")
    diff = [f"{k} {current[k]!r} -> {v!r}" for k, v in options.items()
            if k not in RESUME_FREE and _same(current[k]) != _same(v)]
    if diff:
        raise ValueError(f"cannot resume {str(run_dir)!r} with other options ({'; '.join(diff)}): "
                         "a resumed run ends as the uninterrupted one would; drop them, or start "
                         "a new run with another --name (or --overwrite)")
    return replace(cfg, **{k: options[k] for k in RESUME_FREE if k in options})


def _same(value: Any) -> Any:
    """Values as config.json stores them (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def read_resume_state(run_dir: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(summary, last.pt)`` of a run directory: the summary once it finished (then nothing else
    is read), else the checkpoint to resume from (None: it stopped before writing one and starts
    over). An unreadable ``last.pt`` is a ValueError that says what of the run is intact."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        return dict(read_json(run_dir / "summary.json")), None
    last = run_dir / "last.pt"
    if not last.is_file():
        return None, None
    try:
        return None, read_checkpoint(last)
    except Exception as err:  # truncated, corrupt, not a checkpoint: say what is left
        cause = err.__cause__ or err.__context__ or err  # torch's own words
        raise ValueError(f"cannot resume {str(run_dir)!r}: its last.pt is unreadable, truncated "
                         f"or corrupt ({one_line(cause)}); {_best_state(run_dir)}; to train "
                         "again, move last.pt away and --resume (the run starts over from epoch "
                         "1), or start it over with --overwrite") from err


def _best_state(run_dir: Path) -> str:
    """Whether ``best.pt`` survives, and what it holds."""
    if not (run_dir / "best.pt").is_file():
        return "there is no best.pt yet"
    try:
        best = read_checkpoint(run_dir / "best.pt")
    except Exception:
        return "best.pt is unreadable too"
    extra = best.get("extra") or {}
    row = extra.get("row") or {}
    acc = f", val acc {row['val_acc']:.4f}" if isinstance(row.get("val_acc"), float) else ""
    if is_head_only(best):  # a cached linear probe's, until the run ends
        return (f"best.pt is intact (epoch {extra.get('epoch', '?')}{acc}; it holds the head "
                "alone, the backbone is the run's config's)")
    return (f"best.pt is intact (epoch {extra.get('epoch', '?')}{acc}; surgery.load reads the "
            "model)")
