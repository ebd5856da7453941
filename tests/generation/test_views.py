from __future__ import annotations

import pytest
from django.urls import reverse

from distillapp.generation import services
from distillapp.generation.models import GenerationJob, JobStatus, Teacher
from tests.conftest import login
from tests.generation.conftest import API_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(project, prompt_set, api_teacher, enqueued) -> GenerationJob:
    return services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=api_teacher
    )


def test_the_project_page_lists_teachers_and_jobs_with_their_states(
    alice_client, project, api_teacher, job
) -> None:
    html = alice_client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "Fake GPT" in html and "…WXYZ" in html
    assert f"#{job.pk}" in html and "badge-queued" in html and "Launch generation job" in html


def test_a_viewer_sees_teachers_and_jobs_but_no_launch_form(
    vera, project, api_teacher, job
) -> None:
    client = login(vera)
    html = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "Fake GPT" in html and f"#{job.pk}" in html and "Launch generation job" not in html
    assert client.get(reverse("generation_job_detail", args=[job.pk])).status_code == 200
    assert client.post(reverse("generation_job_cancel", args=[job.pk])).status_code == 403
    assert client.post(reverse("teacher_test", args=[api_teacher.pk])).status_code == 403


def test_outsiders_get_404_everywhere(charlie, api_teacher, job) -> None:
    client = login(charlie)
    for name, arg in [
        ("teacher_detail", api_teacher.pk),
        ("teacher_edit", api_teacher.pk),
        ("generation_job_detail", job.pk),
        ("generation_job_progress", job.pk),
    ]:
        assert client.get(reverse(name, args=[arg])).status_code == 404
    for name, arg in [
        ("teacher_test", api_teacher.pk),
        ("teacher_delete", api_teacher.pk),
        ("generation_job_cancel", job.pk),
        ("generation_job_resume", job.pk),
    ]:
        assert client.post(reverse(name, args=[arg])).status_code == 404


def test_an_admin_adds_a_teacher_and_the_key_never_comes_back(adam, project, fake_openai) -> None:
    client = login(adam)
    response = client.post(
        reverse("teacher_new", args=[project.pk]),
        {
            "name": "Ours",
            "kind": "openai",
            "base_url": fake_openai.base_url,
            "model": "teacher-model",
            "api_key": API_KEY,
            "concurrency": "8",
            "price_input_per_m": "0.15",
            "price_output_per_m": "0.6",
            "temperature": "0.3",
            "top_logprobs": "5",
            "stop": "###\n\\n\\n",
        },
    )
    teacher = Teacher.objects.get(name="Ours")
    assert response.status_code == 302 and response.url == reverse(
        "teacher_detail", args=[teacher.pk]
    )
    assert teacher.decoding == {"temperature": 0.3, "top_logprobs": 5, "stop": ["###", "\n\n"]}
    pages = [
        client.get(reverse("teacher_detail", args=[teacher.pk])),
        client.get(reverse("teacher_edit", args=[teacher.pk])),
        client.get(reverse("project_detail", args=[project.pk])),
        client.post(reverse("teacher_test", args=[teacher.pk]), {"prompt": "hi"}),
    ]
    for page in pages:
        body = page.content.decode()
        assert API_KEY not in body and teacher.api_key_encrypted not in body
    assert "…WXYZ" in pages[0].content.decode()


def test_a_bad_teacher_form_shows_inline_errors_and_keeps_no_key(adam, project) -> None:
    response = login(adam).post(
        reverse("teacher_new", args=[project.pk]),
        {
            "name": "X",
            "kind": "openai",
            "base_url": "not a url",
            "model": "",
            "api_key": API_KEY,
            "temperature": "9",
        },
    )
    body = response.content.decode()
    assert (
        response.status_code == 422 and "Enter the endpoint" in body and "between 0 and 2" in body
    )
    assert API_KEY not in body


def test_editing_without_a_new_key_keeps_the_stored_one(adam, api_teacher, fake_openai) -> None:
    response = login(adam).post(
        reverse("teacher_edit", args=[api_teacher.pk]),
        {
            "name": "Fake GPT 2",
            "base_url": fake_openai.base_url,
            "model": "teacher-model",
            "api_key": "",
            "concurrency": "4",
        },
    )
    assert response.status_code == 302
    api_teacher.refresh_from_db()
    assert api_teacher.name == "Fake GPT 2" and services.teacher_api_key(api_teacher) == API_KEY


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, "Answered in"),
        ({"api_key": "sk-bad"}, "401 Unauthorized"),
        ({"model": "nope"}, "404 Not found: unknown model"),
        ({"base_url": "http://127.0.0.1:9/v1"}, "Could not connect to http://127.0.0.1:9/v1"),
    ],
)
def test_test_teacher_shows_the_answer_or_the_exact_error(
    adam, api_teacher, change, expected
) -> None:
    if change:
        services.teacher_update(teacher=api_teacher, **change)
    response = login(adam).post(
        reverse("teacher_test", args=[api_teacher.pk]), {"prompt": "ping"}, HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert response.status_code == 200 and expected in body
    assert "<html" not in body  # the partial only
    assert not GenerationJob.objects.exists()


def test_test_teacher_reports_a_timeout(adam, api_teacher, fake_openai, settings) -> None:
    settings.TEACHER_REQUEST_TIMEOUT = 1
    fake_openai.slow_seconds = 2
    fake_openai.push("slow")
    body = (
        login(adam)
        .post(reverse("teacher_test", args=[api_teacher.pk]), HTTP_HX_REQUEST="true")
        .content.decode()
    )
    assert "Timed out after 1 s" in body


def test_launching_from_the_form_creates_a_job_and_redirects_to_it(
    adam, project, prompt_set, api_teacher, enqueued
) -> None:
    response = login(adam).post(
        reverse("generation_job_launch", args=[project.pk]),
        {
            "prompt_set": prompt_set.pk,
            "teacher": api_teacher.pk,
            "samples_per_prompt": "2",
            "metadata": "topic=billing",
            "override_temperature": "1.0",
        },
    )
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response.url == reverse(
        "generation_job_detail", args=[job.pk]
    )
    assert (
        job.total == 3 * 2
        and job.teacher_snapshot["decoding"]["temperature"] == 1.0
        and enqueued == [job.pk]
    )


def test_launch_errors_are_shown_inline(adam, project, prompt_set, api_teacher) -> None:
    response = login(adam).post(
        reverse("generation_job_launch", args=[project.pk]),
        {
            "prompt_set": prompt_set.pk,
            "teacher": api_teacher.pk,
            "override_max_tokens": "0",
        },
    )
    assert response.status_code == 422 and "max_tokens must be between" in response.content.decode()
    response = login(adam).post(
        reverse("generation_job_launch", args=[project.pk]), {"teacher": api_teacher.pk}
    )
    assert response.status_code == 422 and "Choose a prompt set." in response.content.decode()


def test_the_job_page_polls_while_active_and_the_partial_stops_polling_at_the_end(
    alice_client, job
) -> None:
    page = alice_client.get(reverse("generation_job_detail", args=[job.pk])).content.decode()
    progress_url = reverse("generation_job_progress", args=[job.pk])
    assert f'hx-get="{progress_url}"' in page and 'hx-trigger="every 2s"' in page
    partial = alice_client.get(progress_url, HTTP_HX_REQUEST="true")
    assert partial.status_code == 200 and "<html" not in partial.content.decode()
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, done=6)
    partial = alice_client.get(progress_url, HTTP_HX_REQUEST="true")
    assert partial.status_code == 286 and "hx-trigger" not in partial.content.decode()
    assert "6</strong> done" in partial.content.decode()
    assert (
        "hx-trigger"
        not in alice_client.get(reverse("generation_job_detail", args=[job.pk])).content.decode()
    )


def test_the_job_page_shows_the_last_errors_with_their_prompts_escaped(
    alice_client, job, prompt_set
) -> None:
    from tests.generation.conftest import make_prompt
    from workers.engine.teachers.openai_runner import ItemResult

    evil = make_prompt(prompt_set, "<script>alert(1)</script>")
    claim = services.generation_job_claim(job_id=job.pk)
    services.generation_job_write_results(
        job_id=job.pk,
        token=claim.token,
        results=[
            ItemResult(evil.pk, 0, False, error="HTTP 500: <b>boom</b>", attempts=3),
        ],
    )
    body = alice_client.get(reverse("generation_job_detail", args=[job.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert "HTTP 500: &lt;b&gt;boom&lt;/b&gt;" in body and "hx-disable" in body


def test_cancel_and_resume_buttons_work_for_admins(adam, job) -> None:
    client = login(adam)
    response = client.post(reverse("generation_job_cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    client.post(reverse("generation_job_resume", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    response = client.post(reverse("generation_job_retry_failed", args=[job.pk]), follow=True)
    assert "Only a finished job with failed items" in response.content.decode()


def test_deleting_a_teacher_asks_first_and_keeps_its_jobs(adam, project, api_teacher, job) -> None:
    client = login(adam)
    assert (
        "Delete teacher Fake GPT?"
        in client.get(reverse("teacher_delete", args=[api_teacher.pk])).content.decode()
    )
    response = client.post(reverse("teacher_delete", args=[api_teacher.pk]))
    assert response.status_code == 422 and "Cancel it first" in response.content.decode()
    services.generation_job_cancel(job=job)
    assert client.post(reverse("teacher_delete", args=[api_teacher.pk])).status_code == 302
    assert GenerationJob.objects.filter(pk=job.pk).exists()
