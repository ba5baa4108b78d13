"""One fine-tune as a submitit job (local executor): preempted mid-run, requeued by submitit's
checkpoint hook, resumed from its run directory to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

import surgery
from analysis.runtime import SlurmOptions, job_error_line, make_executor
from analysis.training import FinetuneJob, TrainConfig, finetune_logs, train, wait_finetune

TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}


def _config(out: Path, name: str) -> TrainConfig:
    return TrainConfig(model="test_resnet", head="gap", hidden=(16,), dropout=0.5,
                       dataset="synthetic", val_size=16,
                       data_options=dict(num_classes=4, n_train=64, n_test=16, image_size=16),
                       epochs=2, batch_size=8, lr=1e-2, progress=False, out=str(out), name=name,
                       ckpt_steps=2, ckpt_minutes=0)


class PreemptedOnce(FinetuneJob):
    """A new run that receives Slurm's preemption signal (USR2) at step 7 of 12, as a job does
    when its partition is needed; what submitit requeues is FinetuneJob.checkpoint's answer."""

    def __call__(self) -> dict[str, Any]:
        torch.set_num_threads(1)

        def preempt(ctx: dict[str, Any]) -> None:
            if ctx["global_step"] == 6:
                os.kill(os.getpid(), signal.SIGUSR2)

        assert self.config is not None
        return train(TrainConfig.from_dict(self.config), on_step=preempt)


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIME_KEYS} for x in lines]


@pytest.mark.slow
def test_a_preempted_job_is_requeued_and_resumes_to_the_uninterrupted_result(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    full = train(_config(tmp_path, "full"))
    run_dir = tmp_path / "cut"
    executor = make_executor("submitit-local", finetune_logs(run_dir), SlurmOptions(cpus_per_task=1))
    job = executor.submit(PreemptedOnce(run_dir, asdict(_config(tmp_path, "cut")), None, 1))
    summary = wait_finetune(job)
    log = job.paths.stdout.read_text()
    assert "this job is preempted" in job.paths.stderr.read_text()
    assert "Calling checkpoint method" in log and "Requeued job" in log
    assert log.count("Starting with JobEnvironment") == 2  # the same job, started again
    assert _rows(run_dir) == _rows(tmp_path / "full") and len(_rows(run_dir)) == 2
    assert (summary["test_acc"], summary["test_loss"]) == (full["test_acc"], full["test_loss"])
    a, b = (surgery.read_model_file(d / "last.pt")["state_dict"] for d in (run_dir,
                                                                           tmp_path / "full"))
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_the_failing_line_of_a_job_error():
    text = ("Job (task=0) failed during processing with trace:\n----------------------\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
            "ValueError: no data\n\n----------------------\nYou can check full logs")
    assert job_error_line(text) == "ValueError: no data"
    assert job_error_line("plain failure").startswith("plain failure")


@pytest.mark.slow
def test_a_failed_job_says_why_and_where_its_logs_are(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    logs = tmp_path / "gone.logs"
    job = make_executor("submitit-local", logs, SlurmOptions()).submit(
        FinetuneJob(tmp_path / "gone", None, {}, 1))  # resumes a run directory that is not there
    with pytest.raises(ValueError) as err:
        wait_finetune(job)
    text = str(err.value)
    assert text.startswith(f"job {job.job_id} failed: FileNotFoundError: ") and "gone" in text
    assert text.endswith(f"(logs: {logs})") and "\n" not in text
    assert getattr(err.value, "exit_code", None) == 1
