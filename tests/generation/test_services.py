from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from distillapp.core.crypto import decrypt_secret
from distillapp.core.runs.services import runs_sweep
from distillapp.filters.services import filter_config_update
from distillapp.generation import selectors, services
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob, JobStatus
from tests.factories import ProjectFactory, PromptSetFactory, TeacherFactory
from tests.generation.conftest import API_KEY
from workers.engine.teachers.openai_runner import ItemResult


def _ok(prompt_id: int, sample: int = 0, tokens: int = 5) -> ItemResult:
    return ItemResult(
        prompt_id,
        sample,
        True,
        text=f"answer {prompt_id}",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=tokens,
        cost_usd=Decimal("0.001"),
        attempts=1,
    )


def _failed(prompt_id: int, sample: int = 0) -> ItemResult:
    return ItemResult(
        prompt_id, sample, False, error="HTTP 500: boom (after 3 attempts)", attempts=3
    )


def _start(project, prompt_set, teacher, **kwargs) -> GenerationJob:
    return services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=teacher, **kwargs
    )


def test_api_key_is_encrypted_at_rest_and_only_its_last_4_are_kept_in_clear(api_teacher) -> None:
    assert API_KEY not in api_teacher.api_key_encrypted
    assert decrypt_secret(api_teacher.api_key_encrypted) == API_KEY
    assert api_teacher.api_key_last4 == "WXYZ"


def test_teacher_validation_names_each_bad_field(project) -> None:
    with pytest.raises(ValidationError) as exc:
        services.teacher_create(
            project=project,
            name="",
            kind="openai",
            base_url="ftp://x",
            model="",
            decoding={"temperature": 5, "top_logprobs": 21},
            price_input_per_m="abc",
        )
    errors = exc.value.message_dict
    assert {"name", "base_url", "model", "temperature", "top_logprobs", "price_input_per_m"} <= set(
        errors
    )


def test_teacher_names_are_unique_in_a_project(api_teacher, project) -> None:
    with pytest.raises(ValidationError) as exc:
        services.teacher_create(
            project=project, name="Fake GPT", kind="openai", base_url="http://x/v1", model="m"
        )
    assert "name" in exc.value.message_dict


def test_update_keeps_the_key_unless_a_new_one_or_blank_is_given(api_teacher) -> None:
    services.teacher_update(teacher=api_teacher, model="other")
    assert services.teacher_api_key(api_teacher) == API_KEY
    services.teacher_update(teacher=api_teacher, api_key="sk-new-9876")
    assert (
        services.teacher_api_key(api_teacher) == "sk-new-9876"
        and api_teacher.api_key_last4 == "9876"
    )
    services.teacher_update(teacher=api_teacher, api_key="")
    assert api_teacher.api_key_encrypted == "" and api_teacher.api_key_last4 == ""


def test_a_job_runs_with_a_frozen_snapshot_that_later_edits_do_not_touch(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher, overrides={"temperature": 0.9})
    services.teacher_update(teacher=api_teacher, model="renamed", decoding={"temperature": 0.1})
    job.refresh_from_db()
    snap = job.teacher_snapshot
    assert snap["model"] == "teacher-model" and snap["base_url"] == api_teacher.base_url
    assert (
        snap["decoding"]["temperature"] == 0.9 and snap["decoding"]["system_prompt"] == "Be brief."
    )
    assert snap["api_key_last4"] == "WXYZ" and API_KEY not in str(snap)
    assert enqueued == [job.pk]


def test_a_job_counts_only_train_prompts_times_samples(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher, samples_per_prompt=3)
    assert job.total == 6 * 3 and job.status == JobStatus.QUEUED
    items, _last = selectors.generation_job_pending_items(job=job)
    assert len(items) == 18
    assert "held out question" not in {m["content"] for item in items for m in item.messages}


def test_search_and_metadata_narrow_the_prompts(project, prompt_set, api_teacher, enqueued) -> None:
    assert _start(project, prompt_set, api_teacher, metadata={"topic": "billing"}).total == 3
    assert _start(project, prompt_set, api_teacher, q="question 4").total == 1
    with pytest.raises(ValidationError, match="No train prompts"):
        _start(project, prompt_set, api_teacher, q="held out")


def test_a_job_refuses_a_prompt_set_of_another_project(project, api_teacher, enqueued) -> None:
    other = PromptSetFactory(project=ProjectFactory(org=project.org))
    with pytest.raises(ValidationError):
        _start(project, other, api_teacher)


def test_bad_overrides_are_refused(project, prompt_set, api_teacher, enqueued) -> None:
    with pytest.raises(ValidationError) as exc:
        _start(project, prompt_set, api_teacher, overrides={"max_tokens": 0})
    assert "overrides.max_tokens" in exc.value.message_dict


def test_claiming_is_exclusive_until_the_heartbeat_goes_stale(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    first = services.generation_job_claim(job_id=job.pk)
    assert first.state == services.ClaimState.CLAIMED
    assert services.generation_job_claim(job_id=job.pk).state == services.ClaimState.BUSY
    GenerationJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=600)
    )
    second = services.generation_job_claim(job_id=job.pk)
    assert second.state == services.ClaimState.CLAIMED and second.token != first.token
    # The first run lost its claim: it can neither write nor finish.
    with pytest.raises(services.ClaimLost):
        services.generation_job_write_results(
            job_id=job.pk, token=first.token, results=[_ok(prompt_set.prompts.first().pk)]
        )
    assert services.generation_job_heartbeat(job_id=job.pk, token=first.token) is None
    assert not Completion.objects.filter(job=job).exists()


def test_writing_the_same_results_twice_neither_duplicates_nor_double_counts(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher, samples_per_prompt=2)
    claim = services.generation_job_claim(job_id=job.pk)
    ids = list(prompt_set.prompts.filter(split="train").values_list("pk", flat=True))
    batch = [_ok(ids[0], 0), _ok(ids[0], 1), _failed(ids[1], 0)]
    services.generation_job_write_results(job_id=job.pk, token=claim.token, results=batch)
    services.generation_job_write_results(job_id=job.pk, token=claim.token, results=batch)
    job.refresh_from_db()
    assert Completion.objects.filter(job=job).count() == 3
    assert (job.done, job.failed, job.completion_tokens, job.prompt_tokens) == (2, 1, 10, 6)
    assert job.cost_usd == Decimal("0.002")


def test_a_failed_result_never_replaces_a_completion_that_succeeded(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    pid = prompt_set.prompts.filter(split="train").first().pk
    services.generation_job_write_results(job_id=job.pk, token=claim.token, results=[_ok(pid)])
    services.generation_job_write_results(job_id=job.pk, token=claim.token, results=[_failed(pid)])
    c = Completion.objects.get(job=job)
    assert c.status == CompletionStatus.OK and c.text == f"answer {pid}"


def test_cancel_of_a_queued_job_is_immediate_and_of_a_running_one_asks_the_worker(
    project, prompt_set, api_teacher, enqueued
) -> None:
    queued = _start(project, prompt_set, api_teacher)
    assert services.generation_job_cancel(job=queued).status == JobStatus.CANCELLED
    running = _start(project, prompt_set, api_teacher)
    services.generation_job_claim(job_id=running.pk)
    assert services.generation_job_cancel(job=running).status == JobStatus.CANCELLING
    with pytest.raises(ValidationError):
        services.generation_job_cancel(job=queued)


def test_cancel_of_a_job_whose_worker_died_is_immediate(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    services.generation_job_claim(job_id=job.pk)
    GenerationJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.generation_job_cancel(job=job).status == JobStatus.CANCELLED


def test_resume_only_from_cancelled_or_failed_and_only_missing_items_are_pending(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    ids = list(prompt_set.prompts.filter(split="train").order_by("pk").values_list("pk", flat=True))
    services.generation_job_write_results(
        job_id=job.pk, token=claim.token, results=[_ok(ids[0]), _failed(ids[1])]
    )
    with pytest.raises(ValidationError):
        services.generation_job_resume(job=job)
    services.generation_job_cancel(job=job)
    job = services.generation_job_finish(job_id=job.pk, token=claim.token, outcome="stopped")
    assert job.status == JobStatus.CANCELLED and job.claim_token == ""
    job = services.generation_job_resume(job=job)
    assert job.status == JobStatus.QUEUED and enqueued[-1] == job.pk
    items, _ = selectors.generation_job_pending_items(job=job)
    assert [i.prompt_id for i in items] == ids[2:]  # neither the done nor the failed one


def test_retry_failed_makes_failed_items_pending_again(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    ids = list(prompt_set.prompts.filter(split="train").order_by("pk").values_list("pk", flat=True))
    services.generation_job_write_results(
        job_id=job.pk, token=claim.token, results=[_ok(i) for i in ids[:-1]] + [_failed(ids[-1])]
    )
    job = services.generation_job_finish(job_id=job.pk, token=claim.token, outcome="completed")
    assert job.status == JobStatus.SUCCEEDED and "1 item failed" in job.message
    job = services.generation_job_retry_failed(job=job)
    assert job.status == JobStatus.QUEUED and job.retry_failed
    items, _ = selectors.generation_job_pending_items(job=job)
    assert [(i.prompt_id, i.sample_index) for i in items] == [(ids[-1], 0)]


def test_retry_failed_is_refused_without_failures(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    job.refresh_from_db()
    with pytest.raises(ValidationError):
        services.generation_job_retry_failed(job=job)


@pytest.mark.parametrize("local_judge, queue", [(False, "default"), (True, "gpu")])
def test_finishing_successfully_enqueues_the_filters(
    project,
    prompt_set,
    api_teacher,
    enqueued,
    filters_sent,
    filters_options,
    django_capture_on_commit_callbacks,
    local_judge,
    queue,
) -> None:
    """On a gpu worker when the project's LLM judge is a local model, which the run loads."""
    if local_judge:
        judge = TeacherFactory(project=project, name="Judge", kind="hf_local", model_path="/m")
        filter_config_update(project=project, data={"judge_teacher_id": judge.pk})
    job = _start(project, prompt_set, api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    pid = prompt_set.prompts.filter(split="train").first().pk
    services.generation_job_write_results(job_id=job.pk, token=claim.token, results=[_ok(pid)])
    with django_capture_on_commit_callbacks(execute=True):
        services.generation_job_finish(job_id=job.pk, token=claim.token, outcome="completed")
    assert filters_sent == [job.pk] and filters_options == [{"queue": queue}]


def test_a_job_where_every_item_failed_is_failed_and_not_filtered(
    project, prompt_set, api_teacher, enqueued, filters_sent, django_capture_on_commit_callbacks
) -> None:
    job = _start(project, prompt_set, api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    ids = prompt_set.prompts.filter(split="train").values_list("pk", flat=True)
    services.generation_job_write_results(
        job_id=job.pk, token=claim.token, results=[_failed(i) for i in ids]
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = services.generation_job_finish(job_id=job.pk, token=claim.token, outcome="completed")
    assert job.status == JobStatus.FAILED and filters_sent == []


def test_the_sweep_re_sends_only_jobs_with_a_stale_heartbeat_once_per_period(
    project, prompt_set, api_teacher, enqueued
) -> None:
    live = _start(project, prompt_set, api_teacher)
    dead = _start(project, prompt_set, api_teacher)
    services.generation_job_claim(job_id=live.pk)
    services.generation_job_claim(job_id=dead.pk)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    GenerationJob.objects.filter(pk=dead.pk).update(
        heartbeat_at=an_hour_ago, enqueued_at=an_hour_ago
    )
    enqueued.clear()
    assert runs_sweep() == [("generation", dead.pk)] and enqueued == [dead.pk]
    assert runs_sweep() == []  # sent once; the next sweep waits a stale period
    GenerationJob.objects.filter(pk=dead.pk).update(enqueued_at=timezone.now() - timedelta(hours=1))
    assert runs_sweep() == [("generation", dead.pk)] and enqueued == [dead.pk, dead.pk]


def test_deleting_a_teacher_with_a_running_job_is_refused(
    project, prompt_set, api_teacher, enqueued
) -> None:
    job = _start(project, prompt_set, api_teacher)
    with pytest.raises(ValidationError):
        services.teacher_delete(teacher=api_teacher)
    services.generation_job_cancel(job=job)
    services.teacher_delete(teacher=api_teacher)
    job.refresh_from_db()
    assert job.teacher is None and job.teacher_snapshot["name"] == "Fake GPT"


def test_progress_reports_throughput_and_eta(project, prompt_set, api_teacher, enqueued) -> None:
    job = _start(project, prompt_set, api_teacher)
    GenerationJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        done=2,
        failed=1,
        run_start_count=0,
        run_started_at=timezone.now() - timedelta(seconds=3),
    )
    job.refresh_from_db()
    p = selectors.job_progress(job=job)
    assert (
        p.remaining == 3
        and p.throughput == pytest.approx(1.0, rel=0.1)
        and p.eta_seconds == pytest.approx(3, rel=0.1)
    )
    assert p.percent_done == pytest.approx(33.33, abs=0.01)
