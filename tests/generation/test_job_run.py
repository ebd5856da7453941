"""Whole API-teacher jobs run by the task (in-process) against the loopback server."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from distillapp.generation import services
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob, JobStatus
from workers.engine import topk_format
from workers.tasks.generation import run_generation_job

pytestmark = pytest.mark.django_db(transaction=True)


def _run(job_id: int) -> str:
    return run_generation_job.apply(args=(job_id,)).get()


def _start(project, prompt_set, teacher, **kwargs) -> GenerationJob:
    return services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=teacher, **kwargs
    )


def _assert_each_item_once(job: GenerationJob, prompts: int, samples: int) -> None:
    rows = Completion.objects.filter(job=job)
    assert rows.count() == prompts * samples
    assert (
        not rows.values("prompt_id", "sample_index")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .exists()
    )
    assert set(rows.values_list("sample_index", flat=True)) == set(range(samples))


def test_a_job_fills_every_train_prompt_and_sample_exactly_once(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent
) -> None:
    job = _start(project, prompt_set, api_teacher, samples_per_prompt=2)
    assert _run(job.pk) == "completed"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and (job.done, job.failed, job.total) == (12, 0, 12)
    _assert_each_item_once(job, 6, 2)
    assert not Completion.objects.filter(job=job, prompt__split="heldout").exists()
    c = Completion.objects.filter(job=job).first()
    assert c.text.startswith("Answer to: question") and c.finish_reason == "stop" and c.cost_usd > 0
    assert topk_format.decode(c.topk).k == 3 and c.mean_logprob is not None and c.latency_ms >= 0
    assert job.completion_tokens == sum(
        Completion.objects.filter(job=job).values_list("completion_tokens", flat=True)
    )
    assert job.cost_usd > 0 and filters_sent == [job.pk]
    assert _run(job.pk) == "ended"  # a second delivery changes nothing
    assert Completion.objects.filter(job=job).count() == 12


def test_cancel_stops_within_seconds_keeps_the_work_and_resume_finishes_it(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent, fake_openai, monkeypatch
) -> None:
    fake_openai.latency = 0.1
    job = _start(
        project, prompt_set, api_teacher, samples_per_prompt=8
    )  # 48 items, ~1.2 s at concurrency 4
    real_heartbeat = services.generation_job_heartbeat
    asked = {}

    def heartbeat_then_cancel(*, job_id: int, token: str):
        if not asked and Completion.objects.filter(job_id=job_id).exists():
            asked["at"] = time.monotonic()
            services.generation_job_cancel(job=GenerationJob.objects.get(pk=job_id))
        return real_heartbeat(job_id=job_id, token=token)

    monkeypatch.setattr(services, "generation_job_heartbeat", heartbeat_then_cancel)
    assert _run(job.pk) == "stopped"
    assert time.monotonic() - asked["at"] < 3
    job.refresh_from_db()
    kept = Completion.objects.filter(job=job).count()
    assert job.status == JobStatus.CANCELLED and 0 < kept < 48 and job.done == kept
    assert filters_sent == []

    monkeypatch.setattr(services, "generation_job_heartbeat", real_heartbeat)
    services.generation_job_resume(job=job)
    requests_before = fake_openai.requests
    assert _run(job.pk) == "completed"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.done == 48
    _assert_each_item_once(job, 6, 8)
    assert fake_openai.requests - requests_before == 48 - kept  # only what was missing


def test_retry_failed_items_regenerates_only_those(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent, fake_openai
) -> None:
    job = _start(project, prompt_set, api_teacher)
    fake_openai.push("400", "400")
    _run(job.pk)
    job.refresh_from_db()
    assert (
        job.status == JobStatus.SUCCEEDED
        and (job.done, job.failed) == (4, 2)
        and "2 items failed" in job.message
    )
    failed = Completion.objects.filter(job=job, status=CompletionStatus.FAILED)
    assert all("HTTP 400" in c.error and c.attempts == 1 for c in failed)
    ok_before = dict(
        Completion.objects.filter(job=job, status=CompletionStatus.OK).values_list("id", "text")
    )
    requests_before = fake_openai.requests
    services.generation_job_retry_failed(job=job)
    _run(job.pk)
    job.refresh_from_db()
    assert (
        job.status == JobStatus.SUCCEEDED
        and (job.done, job.failed) == (6, 0)
        and not job.retry_failed
    )
    assert fake_openai.requests - requests_before == 2
    assert (
        dict(Completion.objects.filter(job=job, id__in=ok_before).values_list("id", "text"))
        == ok_before
    )
    _assert_each_item_once(job, 6, 1)


def test_a_wrong_key_fails_the_job_at_once_and_resume_after_fixing_it_completes(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent, fake_openai
) -> None:
    services.teacher_update(teacher=api_teacher, api_key="sk-wrong-key")
    job = _start(project, prompt_set, api_teacher)
    _run(job.pk)
    job.refresh_from_db()
    assert (
        job.status == JobStatus.FAILED and "HTTP 401" in job.message and fake_openai.requests <= 4
    )
    services.teacher_update(teacher=api_teacher, api_key="sk-test-SECRET-abcd1234WXYZ")
    services.generation_job_resume(job=job)
    _run(job.pk)
    job.refresh_from_db()
    # The 401'd items were recorded failed; resume sends the rest; retry-failed would redo those.
    assert job.status == JobStatus.SUCCEEDED and job.done + job.failed == 6 and job.done >= 2


def test_an_unreachable_endpoint_fails_every_item_after_bounded_attempts(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent
) -> None:
    services.teacher_update(teacher=api_teacher, base_url="http://127.0.0.1:9/v1")
    job = _start(project, prompt_set, api_teacher)
    _run(job.pk)
    job.refresh_from_db()
    assert (
        job.status == JobStatus.FAILED and job.failed == 6 and "All 6 items failed" in job.message
    )
    c = Completion.objects.filter(job=job).first()
    assert c.attempts == 3 and "Connection error" in c.error and "after 3 attempts" in c.error


def test_a_job_whose_worker_died_is_taken_over_and_completed(
    project, prompt_set, api_teacher, fast_retries, enqueued, filters_sent
) -> None:
    job = _start(project, prompt_set, api_teacher)
    dead = services.generation_job_claim(job_id=job.pk)
    assert _run(job.pk) == "busy"  # its heartbeat is fresh: hands off (the sweep covers it)
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert _run(job.pk) == "completed"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.done == 6
    with pytest.raises(services.ClaimLost):
        services.generation_job_finish(job_id=job.pk, token=dead.token, outcome="completed")
