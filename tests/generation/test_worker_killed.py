"""Kill a real Celery worker with SIGKILL in the middle of a job; the job still finishes, each
(prompt, sample) exactly once, with no restart needed.

The killed worker's message stays unacknowledged in Redis until the visibility timeout (hours), so
no worker gets it back soon. Celery beat's sweep (every DISTILLERY_RUN_SWEEP_SECONDS) re-sends the
task of every run whose heartbeat is older than DISTILLERY_RUN_STALE_SECONDS; the claim lets
exactly one worker take the job over and send only what is missing. Both cases operators meet:
a supervisor restarts the worker at once (its heartbeat is still fresh then), and a second worker
that was already running takes over with nothing restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db.models import Count

from distillapp.generation import services
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob, JobStatus
from tests.factories import PromptSetFactory
from tests.generation.conftest import make_prompt
from tests.processes import (
    STALE_SECONDS,
    forget_unacked_messages,
    needs_real_broker_and_database,
    start_beat,
    start_worker,
    stop,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_real_broker_and_database,
]

PROMPTS, SAMPLES = 100, 2
TRANSIENT_FAULTS = 0.3  # share of teacher calls answered 500 or reset (retried)
# The fake teacher is on loopback; retries are quick so the job takes seconds, not minutes.
ENV = {
    "DISTILLERY_TEACHER_BACKOFF_BASE": "0.05",
    "DISTILLERY_TEACHER_BACKOFF_CAP": "0.2",
    "DISTILLERY_TEACHER_MAX_ATTEMPTS": "20",
    "DISTILLERY_OUTBOUND_ALLOW": "127.0.0.0/8",
}


def _start_worker(name: str, log: Path) -> subprocess.Popen:
    return start_worker(name, log, queues="teacher,default", **ENV)


def _start_beat(folder: Path) -> subprocess.Popen:
    return start_beat(folder, **ENV)


@pytest.fixture
def crash_job(project, api_teacher, fake_openai):
    from workers.app import app

    with app.connection_for_write() as conn:
        for queue in ("teacher", "default"):
            conn.default_channel.queue_purge(queue)
    fake_openai.latency = 0.05
    fake_openai.fault_rates = {"500": TRANSIENT_FAULTS / 2, "reset": TRANSIENT_FAULTS / 2}
    prompt_set = PromptSetFactory(project=project)
    for i in range(PROMPTS):
        make_prompt(prompt_set, f"crash question {i}")
    job = services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=api_teacher, samples_per_prompt=SAMPLES
    )
    assert job.total == PROMPTS * SAMPLES
    yield job
    forget_unacked_messages()


def _wait_for_some_work(job, log: Path) -> None:
    wait_for(
        lambda: Completion.objects.filter(job=job).count() >= 30, 90, "the first completions", log
    )


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _assert_each_item_once(job, fake_openai, api_teacher) -> None:
    total = PROMPTS * SAMPLES
    job.refresh_from_db()
    rows = Completion.objects.filter(job=job)
    assert job.status == JobStatus.SUCCEEDED, (job.status, job.message)
    assert rows.count() == total and job.done == total and job.failed == 0
    assert (
        not rows.values("prompt_id", "sample_index")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .exists()
    )
    assert set(rows.values_list("status", flat=True)) == {CompletionStatus.OK}


def _killed_mid_job(job, log: Path) -> int:
    written = Completion.objects.filter(job=job).count()
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and 30 <= written < PROMPTS * SAMPLES, (
        job.status,
        written,
    )
    return written


def test_a_worker_killed_and_restarted_at_once_finishes_the_job(
    crash_job, api_teacher, fake_openai, tmp_path
) -> None:
    job = crash_job
    procs: list[subprocess.Popen] = []
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    try:
        procs.append(_start_beat(tmp_path))
        procs.append(first := _start_worker("kill1", log1))
        _wait_for_some_work(job, log1)
        _kill(first)
        # A supervisor restarts it within a second: the dead worker's heartbeat is still fresh.
        procs.append(_start_worker("kill2", log2))
        killed_at = time.monotonic()
        _killed_mid_job(job, log1)
        wait_for(
            lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED,
            120,
            "the job to finish",
            log2,
        )
    finally:
        for proc in procs:
            stop(proc)
    _assert_each_item_once(job, fake_openai, api_teacher)
    # Taken over after the stale threshold, by the sweep, not by the restart itself.
    assert time.monotonic() - killed_at >= STALE_SECONDS
    assert "re-sent stale runs" in log2.read_text()


def test_the_other_running_worker_takes_over_when_one_is_killed(
    crash_job, api_teacher, fake_openai, tmp_path
) -> None:
    job = crash_job
    procs: list[subprocess.Popen] = []
    logs = {"kill-a": tmp_path / "a.log", "kill-b": tmp_path / "b.log"}
    workers: dict[str, subprocess.Popen] = {}
    try:
        procs.append(_start_beat(tmp_path))
        for name, log in logs.items():
            procs.append(workers.setdefault(name, _start_worker(name, log)))
        _wait_for_some_work(job, logs["kill-a"])
        busy = next(
            name
            for name, log in logs.items()
            if "run_generation_job" in log.read_text() and "received" in log.read_text()
        )
        idle = next(name for name in logs if name != busy)
        _kill(workers[busy])  # nothing is restarted
        _killed_mid_job(job, logs[busy])
        wait_for(
            lambda: GenerationJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED,
            120,
            "the job to finish",
            logs[idle],
        )
    finally:
        for proc in procs:
            stop(proc)
    _assert_each_item_once(job, fake_openai, api_teacher)
    assert "run_generation_job" in logs[idle].read_text()
