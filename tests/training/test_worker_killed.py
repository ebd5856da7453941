"""SIGKILL a real Celery gpu worker in the middle of a training run: a replacement started at
once takes the run over (through beat's sweep of stale runs) and finishes it from the latest
checkpoint; steps 1…N each appear exactly once and the final adapter loads with peft.

What happens to the killed worker's child: only the worker gets SIGKILL (as from the OOM
killer); its trainer child is in the same process group but is not killed with it. The kernel
sends it SIGTERM (PR_SET_PDEATHSIG), the engine's CLI checkpoints and exits, and the new worker
waits on the run folder's flock until it has, so two trainers never write the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.training import services
from distillapp.training.models import TrainingMetric, TrainingRun
from tests.processes import (
    forget_unacked_messages,
    needs_real_broker_and_database,
    start_beat,
    start_worker,
    stop,
    wait_for,
)
from tests.training.conftest import make_version, ready_base_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_real_broker_and_database,
]

STEPS = 240


def _env(media: Path) -> dict[str, str]:
    return {
        "DISTILLERY_MEDIA_ROOT": str(media),
        "DISTILLERY_TRAINING_PROCESSES": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }


def _worker(name: str, log: Path, media: Path) -> subprocess.Popen:
    return start_worker(name, log, queues="gpu,default", **_env(media))


def _children_of(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(x) for x in out.split()]


def test_a_killed_gpu_worker_is_replaced_and_the_run_finishes_each_step_once(
    project, alice, tiny_base, tmp_path, settings
):
    from workers.app import app

    with app.connection_for_write() as conn:
        for queue in ("gpu", "default"):
            conn.default_channel.queue_purge(queue)
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = media
    version = make_version(project, media, repeat=8)
    base = ready_base_model(project, tiny_base)
    run = services.training_run_launch(
        project=project, user=alice, dataset_version_id=version.pk, base_model_id=base.pk,
        config={"max_steps": STEPS, "batch_size": 2, "logging_steps": 1, "save_steps": 20,
                "lora_r": 4, "lora_alpha": 8, "max_length": 64},
    )  # fmt: skip
    procs: list[subprocess.Popen] = []
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    orphan: list[int] = []
    try:
        procs.append(start_beat(tmp_path, **_env(media)))
        procs.append(first := _worker("train1", log1, media))
        wait_for(
            lambda: TrainingMetric.objects.filter(run=run, step__gte=45).exists(),
            240,
            "the first 45 steps",
            log1,
        )
        orphan = _children_of(first.pid)
        assert orphan, "the worker should be supervising a training child"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        procs.append(_start := _worker("train2", log2, media))
        assert TrainingRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
        wait_for(
            lambda: (
                TrainingRun.objects.get(pk=run.pk).status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
            ),
            400,
            "the run to end",
            log2,
        )
    finally:
        for proc in procs:
            stop(proc)
        forget_unacked_messages()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.message, run.log_tail[-3000:])
    steps = list(TrainingMetric.objects.filter(run=run).values_list("step", flat=True))
    assert steps == list(range(1, STEPS + 1))
    # The orphaned trainer exited on its own (PDEATHSIG → checkpoint → exit), nobody killed it.
    for pid in orphan:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert "re-sent stale runs" in log2.read_text() or "run_training" in log2.read_text()
    assert any("resuming from step" in line for line in run.log_tail.splitlines())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_base)), str(services.run_folder(run))
    )
    assert model(__import__("torch").tensor([[5, 6, 7]])).logits.shape[-1] > 90
