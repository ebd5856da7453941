from __future__ import annotations

import pytest

from distillapp.filters.models import FilterRun, RunStatus, VerdictState
from tests.factories import (
    CompletionFactory,
    CompletionVerdictFactory,
    GenerationJobFactory,
    TeacherFactory,
)
from workers.tasks.filters import execute_filter_run

JSON = "application/json"


@pytest.fixture
def job(project):
    return GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))


@pytest.mark.django_db
def test_an_admin_runs_the_filters_and_reads_the_summary_and_verdicts(
    api_client, adam, project, job, django_capture_on_commit_callbacks
):
    CompletionFactory(job=job, text="I'm sorry, but I can't.")
    CompletionFactory(job=job, text="A perfectly fine answer about things.")
    client = api_client(adam)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            f"/api/v1/projects/{project.pk}/filters/run", {"job_id": job.pk}, content_type=JSON
        )
    assert response.status_code == 202 and len(callbacks) == 1
    run = response.json()
    assert run["status"] == "queued" and run["job_id"] == job.pk
    conflict = client.post(f"/api/v1/projects/{project.pk}/filters/run", {}, content_type=JSON)
    assert conflict.status_code == 422 and "already" in conflict.json()["detail"]

    execute_filter_run.run(run["id"])
    runs = client.get(f"/api/v1/projects/{project.pk}/filters/runs").json()
    assert runs[0]["status"] == "succeeded" and runs[0]["counts"]["filtered"] == 1

    summary = client.get(f"/api/v1/projects/{project.pk}/filters/summary").json()
    assert summary["by_state"]["filtered"] == 1 and summary["by_state"]["passed"] == 1
    assert {f["name"]: f["count"] for f in summary["by_filter"]}["refusal"] == 1

    page = client.get(
        f"/api/v1/projects/{project.pk}/filters/verdicts", {"state": "filtered", "flag": "refusal"}
    ).json()
    assert (
        len(page["items"]) == 1
        and page["items"][0]["flags"] == ["refusal"]
        and page["next_cursor"] is None
    )


@pytest.mark.django_db
def test_the_verdict_list_pages_with_a_cursor(api_client, vera, project, job):
    for _ in range(3):
        CompletionVerdictFactory(completion=CompletionFactory(job=job))
    client = api_client(vera)
    first = client.get(f"/api/v1/projects/{project.pk}/filters/verdicts", {"limit": 2}).json()
    second = client.get(
        f"/api/v1/projects/{project.pk}/filters/verdicts",
        {"limit": 2, "cursor": first["next_cursor"]},
    ).json()
    ids = [v["completion_id"] for v in first["items"] + second["items"]]
    assert len(ids) == 3 == len(set(ids))
    assert (
        client.get(
            f"/api/v1/projects/{project.pk}/filters/verdicts", {"cursor": "forged"}
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_config_get_and_put_with_field_errors(api_client, adam, vera, project):
    url = f"/api/v1/projects/{project.pk}/filters/config"
    assert api_client(vera).get(url).json()["dedup_threshold"] == 0.8
    bad = api_client(adam).put(
        url, {"dedup_threshold": 0.1, "reference_mode": "loose"}, content_type=JSON
    )
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"dedup_threshold", "reference_mode"}
    ok = api_client(adam).put(
        url, {"dedup_threshold": 0.9, "refusal_phrases": ["nope"]}, content_type=JSON
    )
    assert ok.status_code == 200 and ok.json()["dedup_threshold"] == 0.9
    assert api_client(vera).get(url).json()["refusal_phrases"] == ["nope"]


@pytest.mark.django_db
def test_restore_and_unrestore_through_the_api(api_client, bob, project, job):
    verdict = CompletionVerdictFactory(completion=CompletionFactory(job=job))
    client = api_client(bob)
    restored = client.post(f"/api/v1/completions/{verdict.completion_id}/review/restore")
    assert restored.status_code == 200
    body = restored.json()
    assert (
        body["state"] == VerdictState.RESTORED
        and body["restored_by"] == "bob"
        and "refusal" in body["reasons"]
    )
    assert (
        client.get(f"/api/v1/completions/{verdict.completion_id}/verdict").json()["state"]
        == "restored"
    )
    undone = client.post(f"/api/v1/completions/{verdict.completion_id}/review/unrestore")
    assert undone.json()["state"] == "filtered"


@pytest.mark.django_db
def test_api_permissions(api_client, vera, bob, charlie, project, job):
    verdict = CompletionVerdictFactory(completion=CompletionFactory(job=job))
    viewer, reviewer, outsider = api_client(vera), api_client(bob), api_client(charlie)
    base = f"/api/v1/projects/{project.pk}/filters"
    assert viewer.post(f"{base}/run", {}, content_type=JSON).status_code == 403
    assert reviewer.post(f"{base}/run", {}, content_type=JSON).status_code == 403
    assert viewer.put(f"{base}/config", {}, content_type=JSON).status_code == 403
    assert (
        viewer.post(f"/api/v1/completions/{verdict.completion_id}/review/restore").status_code
        == 403
    )
    for path in ("summary", "config", "verdicts", "runs"):
        assert viewer.get(f"{base}/{path}").status_code == 200
        assert outsider.get(f"{base}/{path}").status_code == 404
    assert outsider.post(f"{base}/run", {}, content_type=JSON).status_code == 404
    assert (
        outsider.post(f"/api/v1/completions/{verdict.completion_id}/review/restore").status_code
        == 404
    )
    assert outsider.get(f"/api/v1/completions/{verdict.completion_id}/verdict").status_code == 404
    from django.test import Client

    assert Client().get(f"{base}/summary").status_code == 401
    assert not FilterRun.objects.exists()


@pytest.mark.django_db
def test_a_job_of_another_project_is_404(api_client, adam, project, other_org):
    from tests.factories import ProjectFactory

    foreign_job = GenerationJobFactory(
        teacher=TeacherFactory(project=ProjectFactory(org=other_org))
    )
    response = api_client(adam).post(
        f"/api/v1/projects/{project.pk}/filters/run", {"job_id": foreign_job.pk}, content_type=JSON
    )
    assert response.status_code == 404
    assert not FilterRun.objects.filter(status=RunStatus.QUEUED).exists()


@pytest.mark.django_db
def test_an_unchecked_completion_has_a_null_verdict(api_client, vera, job):
    completion = CompletionFactory(job=job)
    response = api_client(vera).get(f"/api/v1/completions/{completion.pk}/verdict")
    assert response.status_code == 200 and response.json() is None


@pytest.mark.django_db
def test_judge_errors_and_replies_are_in_the_api(api_client, vera, adam, project, job):
    bad = CompletionVerdictFactory(
        completion=CompletionFactory(job=job),
        state=VerdictState.PASSED,
        flags=[],
        judge_error="The judge's reply is not the JSON object asked for.",
        judge_reply="I think 1.",
    )
    CompletionVerdictFactory(
        completion=CompletionFactory(job=job), state=VerdictState.PASSED, flags=[], judge_score=9
    )
    client = api_client(vera)
    summary = client.get(f"/api/v1/projects/{project.pk}/filters/summary").json()
    assert summary["judge"]["errors"] == 1 and summary["judge"]["scored"] == 1
    page = client.get(
        f"/api/v1/projects/{project.pk}/filters/verdicts", {"judge_error": "true"}
    ).json()
    assert [v["completion_id"] for v in page["items"]] == [bad.completion_id]
    item = page["items"][0]
    assert item["judge_score"] is None and item["judge_reply"] == "I think 1."
    assert item["judge_error"].startswith("The judge's reply")
    url = f"/api/v1/projects/{project.pk}/filters/config"
    assert client.get(url).json()["dedup_within_prompt"] is False
    ok = api_client(adam).put(url, {"dedup_within_prompt": True}, content_type=JSON)
    assert ok.status_code == 200 and ok.json()["dedup_within_prompt"] is True
    bad_put = api_client(adam).put(url, {"dedup_within_prompt": 3}, content_type=JSON)
    assert {e["field"] for e in bad_put.json()["errors"]} == {"dedup_within_prompt"}
