from __future__ import annotations

import json

import pytest

from distillapp.generation import services
from distillapp.generation.models import Completion, GenerationJob, JobStatus
from tests.generation.conftest import API_KEY
from workers.engine.teachers.openai_runner import ItemResult

pytestmark = pytest.mark.django_db


def _post(client, url: str, data: dict | None = None):
    return client.post(url, data=json.dumps(data or {}), content_type="application/json")


def _patch(client, url: str, data: dict):
    return client.patch(url, data=json.dumps(data), content_type="application/json")


def test_teachers_crud_never_returns_the_key(api_client, adam, vera, project, fake_openai) -> None:
    admin = api_client(adam)
    response = _post(
        admin,
        f"/api/v1/projects/{project.pk}/teachers",
        {
            "name": "API GPT",
            "kind": "openai",
            "base_url": fake_openai.base_url,
            "model": "teacher-model",
            "api_key": API_KEY,
            "concurrency": 8,
            "decoding": {"temperature": 0.5, "top_logprobs": 20},
            "prices": {"input_per_m": "0.15", "output_per_m": 0.6},
        },
    )
    assert response.status_code == 201, response.content
    teacher = response.json()
    assert (
        teacher["api_key_last4"] == "WXYZ"
        and teacher["has_api_key"]
        and teacher["prices"]["output_per_m"] == "0.6"
    )
    tid = teacher["id"]
    bodies = [response.content]
    bodies.append(api_client(vera).get(f"/api/v1/projects/{project.pk}/teachers").content)
    bodies.append(api_client(vera).get(f"/api/v1/teachers/{tid}").content)
    patched = _patch(
        admin,
        f"/api/v1/teachers/{tid}",
        {"model": "other", "requests_per_minute": 60, "prices": {"input_per_m": 1}},
    )
    assert (
        patched.status_code == 200
        and patched.json()["model"] == "other"
        and patched.json()["requests_per_minute"] == 60
    )
    assert (
        patched.json()["prices"]["input_per_m"] == "1" and patched.json()["api_key_last4"] == "WXYZ"
    )
    bodies.append(patched.content)
    bodies.append(_post(admin, f"/api/v1/teachers/{tid}/test", {"prompt": "hi"}).content)
    assert all(API_KEY.encode() not in body for body in bodies)
    assert _patch(api_client(vera), f"/api/v1/teachers/{tid}", {"model": "x"}).status_code == 403
    assert admin.delete(f"/api/v1/teachers/{tid}").status_code == 204


def test_invalid_teacher_input_is_a_422_with_field_errors(api_client, adam, project) -> None:
    response = _post(
        api_client(adam),
        f"/api/v1/projects/{project.pk}/teachers",
        {
            "name": "x",
            "kind": "openai",
            "base_url": "nope",
            "model": "m",
            "decoding": {"top_logprobs": 50},
        },
    )
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"base_url", "top_logprobs"} <= fields


def test_outsiders_get_404_and_anonymous_401(api_client, charlie, client, api_teacher) -> None:
    assert api_client(charlie).get(f"/api/v1/teachers/{api_teacher.pk}").status_code == 404
    assert _post(api_client(charlie), f"/api/v1/teachers/{api_teacher.pk}/test").status_code == 404
    assert client.get(f"/api/v1/teachers/{api_teacher.pk}").status_code == 401


def test_test_endpoint_reports_the_exact_error(api_client, adam, api_teacher) -> None:
    services.teacher_update(teacher=api_teacher, model="missing-model")
    result = _post(
        api_client(adam), f"/api/v1/teachers/{api_teacher.pk}/test", {"prompt": "hi"}
    ).json()
    assert result["ok"] is False and "404" in result["error"] and "missing-model" in result["error"]
    assert not GenerationJob.objects.exists()


def test_jobs_launch_read_cancel_resume_and_page_completions(
    api_client, adam, vera, project, prompt_set, api_teacher, enqueued
) -> None:
    admin = api_client(adam)
    response = _post(
        admin,
        f"/api/v1/projects/{project.pk}/generation-jobs",
        {
            "prompt_set_id": prompt_set.pk,
            "teacher_id": api_teacher.pk,
            "samples_per_prompt": 2,
            "overrides": {"temperature": 1.1},
        },
    )
    assert response.status_code == 201, response.content
    job = response.json()
    assert (
        job["status"] == "queued"
        and job["total"] == 12
        and job["teacher_snapshot"]["decoding"]["temperature"] == 1.1
    )
    assert API_KEY not in response.content.decode()
    jid = job["id"]
    assert (
        _post(
            api_client(vera),
            f"/api/v1/projects/{project.pk}/generation-jobs",
            {"prompt_set_id": prompt_set.pk, "teacher_id": api_teacher.pk},
        ).status_code
        == 403
    )

    claim = services.generation_job_claim(job_id=jid)
    ids = list(prompt_set.prompts.filter(split="train").order_by("pk").values_list("pk", flat=True))
    services.generation_job_write_results(
        job_id=jid,
        token=claim.token,
        results=[
            ItemResult(pid, s, True, text=f"t{pid}-{s}", completion_tokens=2, attempts=1)
            for pid in ids
            for s in range(2)
        ][:5],
    )
    status = api_client(vera).get(f"/api/v1/generation-jobs/{jid}").json()
    assert (status["status"], status["done"], status["failed"]) == ("running", 5, 0)

    seen, cursor = [], None
    while True:
        url = f"/api/v1/generation-jobs/{jid}/completions?limit=2" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = api_client(vera).get(url).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(
        Completion.objects.filter(job_id=jid).order_by("id").values_list("id", flat=True)
    )
    assert (
        api_client(vera).get(f"/api/v1/generation-jobs/{jid}/completions?cursor=forged").status_code
        == 400
    )

    assert _post(admin, f"/api/v1/generation-jobs/{jid}/cancel").json()["status"] == "cancelling"
    services.generation_job_finish(job_id=jid, token=claim.token, outcome="stopped")
    assert _post(admin, f"/api/v1/generation-jobs/{jid}/resume").json()["status"] == "queued"
    assert _post(admin, f"/api/v1/generation-jobs/{jid}/retry-failed").status_code == 422
    assert _post(api_client(vera), f"/api/v1/generation-jobs/{jid}/cancel").status_code == 403


def test_a_prompt_set_of_another_project_is_refused(
    api_client, adam, project, api_teacher, enqueued
) -> None:
    from tests.factories import ProjectFactory, PromptSetFactory

    other = PromptSetFactory(project=ProjectFactory(org=project.org))
    response = _post(
        api_client(adam),
        f"/api/v1/projects/{project.pk}/generation-jobs",
        {"prompt_set_id": other.pk, "teacher_id": api_teacher.pk},
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "prompt_set_id"


def test_retry_failed_via_the_api(
    api_client, adam, project, prompt_set, api_teacher, enqueued
) -> None:
    job = services.generation_job_start(project=project, prompt_set=prompt_set, teacher=api_teacher)
    claim = services.generation_job_claim(job_id=job.pk)
    pid = prompt_set.prompts.filter(split="train").first().pk
    services.generation_job_write_results(
        job_id=job.pk, token=claim.token, results=[ItemResult(pid, 0, False, error="x")]
    )
    services.generation_job_finish(job_id=job.pk, token=claim.token, outcome="completed")
    response = _post(api_client(adam), f"/api/v1/generation-jobs/{job.pk}/retry-failed")
    assert response.status_code == 200 and response.json()["status"] == JobStatus.QUEUED
