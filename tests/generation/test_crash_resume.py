"""Kill a real Celery worker with SIGKILL in the middle of a job; a new worker finishes it.

Recovery path under test: the killed worker's message stays unacknowledged in Redis until the
visibility timeout (hours), so the replacement worker does not get it back soon. Instead, every
worker runs `generation_jobs_recover` when it starts (`worker_ready`): jobs still marked running
whose heartbeat is older than DISTILLERY_GENERATION_STALE_SECONDS are re-enqueued, and the claim
lets exactly one run take the job over and send only what is missing.
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
from django.db.models import Count

from distillapp.generation import services
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob, JobStatus
from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.factories import PromptSetFactory
from tests.generation.conftest import make_prompt

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (USING_REDIS and USING_POSTGRES),
        reason="needs Redis (CELERY_BROKER_URL=redis://...) and PostgreSQL (DATABASE_URL) so a worker "
        "process shares the broker and the test database; the embedded defaults cannot",
    ),
]

STALE_SECONDS = 3
PROMPTS, SAMPLES = 40, 4


def _worker_env() -> dict[str, str]:
    url = urlparse(os.environ["DATABASE_URL"])
    env = dict(os.environ)
    env.update(
        DATABASE_URL=urlunparse(url._replace(path="/" + connection.settings_dict["NAME"])),
        DISTILLERY_GENERATION_STALE_SECONDS=str(STALE_SECONDS),
        DISTILLERY_TEACHER_BACKOFF_BASE="0.05",
        PYTHONUNBUFFERED="1",
    )
    return env


def _start_worker(name: str, log: Path) -> subprocess.Popen:
    celery = Path(sys.executable).with_name("celery")
    return subprocess.Popen(
        [
            str(celery),
            "-A",
            "workers.app",
            "worker",
            "-Q",
            "teacher,default",
            "-c",
            "1",
            "-P",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}@%h",
            "--loglevel=INFO",
        ],
        cwd=str(settings.BASE_DIR),
        env=_worker_env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_a_job_survives_sigkill_of_its_worker_with_every_item_exactly_once(
    project, api_teacher, fake_openai, tmp_path
) -> None:
    from workers.app import app

    with app.connection_for_write() as conn:
        for queue in ("teacher", "default"):
            conn.default_channel.queue_purge(queue)

    fake_openai.latency = 0.1  # 160 items at concurrency 4: about 4 s of work
    prompt_set = PromptSetFactory(project=project)
    for i in range(PROMPTS):
        make_prompt(prompt_set, f"crash question {i}")
    job = services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=api_teacher, samples_per_prompt=SAMPLES
    )
    total = PROMPTS * SAMPLES
    assert job.total == total

    first = second = None
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    try:
        first = _start_worker("h4crash1", log1)
        _wait(
            lambda: Completion.objects.filter(job=job).count() >= 20,
            90,
            "the first completions",
            log1,
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        written = Completion.objects.filter(job=job).count()
        job.refresh_from_db()
        assert job.status == JobStatus.RUNNING and 20 <= written < total, (job.status, written)

        time.sleep(STALE_SECONDS + 1)  # its heartbeat goes stale
        second = _start_worker("h4crash2", log2)
        _wait(
            lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED,
            120,
            "the job to finish",
            log2,
        )
    finally:
        _stop(first)
        _stop(second)
        import redis

        # The killed worker's unacked message would come back hours later in this Redis db.
        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("unacked", "unacked_index")

    job.refresh_from_db()
    rows = Completion.objects.filter(job=job)
    assert rows.count() == total and job.done == total and job.failed == 0
    assert (
        not rows.values("prompt_id", "sample_index")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .exists()
    )
    assert set(rows.values_list("status", flat=True)) == {CompletionStatus.OK}
    # Nothing was sent twice except what was in flight (or arriving during the last write) when it died.
    assert total <= fake_openai.requests <= total + 2 * api_teacher.concurrency
    assert "re-enqueued generation jobs with a stale heartbeat" in log2.read_text()
