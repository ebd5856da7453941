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
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest
from django.conf import settings
from django.db import connection

from distillapp.core.runs.models import RunStatus
from distillapp.training import services
from distillapp.training.models import TrainingMetric, TrainingRun
from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.training.conftest import make_version, ready_base_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (USING_REDIS and USING_POSTGRES),
        reason="needs Redis (CELERY_BROKER_URL=redis://...) and PostgreSQL (DATABASE_URL) so worker "
        "and beat processes share the broker and the test database",
    ),
]

STALE_SECONDS = 3
SWEEP_SECONDS = 1
STEPS = 240
CELERY = str(Path(sys.executable).with_name("celery"))


def _env(media: Path) -> dict[str, str]:
    url = urlparse(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    env.update(
        DATABASE_URL=urlunparse(url._replace(path="/" + connection.settings_dict["NAME"])),
        DISTILLERY_RUN_STALE_SECONDS=str(STALE_SECONDS),
        DISTILLERY_RUN_SWEEP_SECONDS=str(SWEEP_SECONDS),
        DISTILLERY_MEDIA_ROOT=str(media),
        DISTILLERY_TRAINING_PROCESSES="1",
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _spawn(args: list[str], log: Path, media: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [CELERY, "-A", "workers.app", *args, "--loglevel=INFO"],
        cwd=str(settings.BASE_DIR),
        env=_env(media),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _worker(name: str, log: Path, media: Path) -> subprocess.Popen:
    return _spawn(
        ["worker", "-Q", "gpu,default", "-c", "1", "-P", "solo", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"{name}@%h"],
        log,
        media,
    )  # fmt: skip


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.read_text()[-5000:]}")


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
        procs.append(_spawn(["beat", "-s", str(tmp_path / "beat")], tmp_path / "beat.log", media))
        procs.append(first := _worker("train1", log1, media))
        _wait(
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
        _wait(
            lambda: (
                TrainingRun.objects.get(pk=run.pk).status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
            ),
            400,
            "the run to end",
            log2,
        )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")
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
