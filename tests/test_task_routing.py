"""Every kind of run names a task the Celery app has, and the queue its runs go to."""

from __future__ import annotations

import pytest

from distillapp.core.queues import Queue
from distillapp.core.runs.registry import kind_of, kinds
from distillapp.generation.models import GenerationJob
from workers.app import TASK_MODULES, app


def test_every_run_kind_names_a_registered_task():
    app.loader.import_default_modules()
    names = {kind.name for kind in kinds()}
    assert {"generation", "filters", "search_index"} <= names
    for kind in kinds():
        assert kind.task in app.tasks, kind.task
    assert "workers.tasks.maintenance.sweep_stale_runs" in app.tasks
    assert "workers.tasks.generation" in TASK_MODULES


def test_beat_sends_the_sweep_on_the_default_queue(settings):
    entry = app.conf.beat_schedule["sweep-stale-runs"]
    assert entry["task"] == "workers.tasks.maintenance.sweep_stale_runs"
    assert entry["options"]["queue"] == Queue.DEFAULT.value


@pytest.mark.parametrize(("kind", "queue"), [("openai", Queue.TEACHER), ("hf_local", Queue.GPU)])
def test_generation_jobs_go_to_the_queue_of_their_teacher_kind(kind, queue):
    job = GenerationJob(teacher_snapshot={"kind": kind})
    assert kind_of(job).queue(job) == queue
