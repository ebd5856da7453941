from __future__ import annotations

import pytest
from django.urls import reverse

from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus, VerdictState
from tests.conftest import login
from tests.factories import (
    CompletionFactory,
    CompletionVerdictFactory,
    GenerationJobFactory,
    TeacherFactory,
)
from tests.inert_html import active_content
from workers.tasks.filters import execute_filter_run

XSS = '<script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:alert(3)" hx-get="/x">x</a><svg onload=alert(4)>'
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def job(project):
    return GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))


@pytest.fixture
def verdict(job):
    completion = CompletionFactory(
        job=job,
        text="I'm sorry, but I can't. " + XSS,
        prompt__text="Prompt " + XSS,
        prompt__reference=XSS,
    )
    return CompletionVerdictFactory(completion=completion, reasons={"refusal": "Matched " + XSS})


@pytest.mark.django_db
def test_the_filtered_list_shows_reasons_and_escapes_untrusted_text(alice_client, project, verdict):
    response = alice_client.get(reverse("filters_list", args=[project.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert f"Completion #{verdict.completion_id}" in html
    assert "Matched &lt;script&gt;" in html
    assert reverse("verdict_restore", args=[verdict.completion_id]) in html
    # The completion and prompt containers are inert; their content has no live markup at all.
    start = html.index('<pre class="completion-text" hx-disable>')
    assert active_content(html[start : html.index("</pre>", start)]) == []


@pytest.mark.django_db
def test_the_list_filters_by_flag_and_state(alice_client, project, job, verdict):
    other = CompletionVerdictFactory(
        completion=CompletionFactory(job=job), flags=["echo"], reasons={"echo": "copied"}
    )
    url = reverse("filters_list", args=[project.pk])
    html = alice_client.get(url, {"flag": "echo"}).content.decode()
    assert (
        f"Completion #{other.completion_id}" in html
        and f"Completion #{verdict.completion_id}" not in html
    )
    html = alice_client.get(url, {"state": "restored"}).content.decode()
    assert "No restored completions" in html


@pytest.mark.django_db
def test_the_list_pages_with_a_cursor(alice_client, project, job, monkeypatch):
    from distillapp.filters import views

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    ids = [
        CompletionVerdictFactory(completion=CompletionFactory(job=job)).completion_id
        for _ in range(3)
    ]
    url = reverse("filters_list", args=[project.pk])
    first = alice_client.get(url).content.decode()
    assert f"#{ids[0]}" in first and f"#{ids[2]}" not in first and "Show more" in first
    cursor = first.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    from urllib.parse import unquote

    more = alice_client.get(url, {"cursor": unquote(cursor)}, **HX).content.decode()
    assert f"#{ids[2]}" in more and "<html" not in more


@pytest.mark.django_db
def test_a_reviewer_restores_with_htmx_and_gets_the_updated_card(project, bob, verdict):
    client = login(bob)
    response = client.post(reverse("verdict_restore", args=[verdict.completion_id]), **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Restored" in html and "Filter out again" in html and "<html" not in html
    assert "&lt;script&gt;" in html
    verdict.refresh_from_db()
    assert verdict.state == VerdictState.RESTORED and verdict.restored_by == bob
    response = client.post(reverse("verdict_unrestore", args=[verdict.completion_id]))
    assert response.status_code == 302
    verdict.refresh_from_db()
    assert verdict.state == VerdictState.FILTERED


@pytest.mark.django_db
def test_restoring_a_passed_completion_says_why_not(project, bob, job):
    passed = CompletionVerdictFactory(
        completion=CompletionFactory(job=job), state=VerdictState.PASSED, flags=[]
    )
    response = login(bob).post(reverse("verdict_restore", args=[passed.completion_id]), **HX)
    assert response.status_code == 422 and b"Only a filtered-out" in response.content


@pytest.mark.django_db
def test_viewers_cannot_restore_run_or_configure(project, vera, verdict):
    client = login(vera)
    assert client.post(reverse("verdict_restore", args=[verdict.completion_id])).status_code == 403
    assert client.post(reverse("filters_run", args=[project.pk])).status_code == 403
    assert (
        client.post(reverse("filters_config", args=[project.pk]), {"min_chars": 3}).status_code
        == 403
    )
    page = client.get(reverse("filters_config", args=[project.pk]))
    assert page.status_code == 200 and b"Only admins can change" in page.content
    list_page = client.get(reverse("filters_list", args=[project.pk])).content.decode()
    assert "Restore</button>" not in list_page and "Run filters" not in list_page


@pytest.mark.django_db
def test_reviewers_cannot_run_or_configure(project, bob):
    client = login(bob)
    assert client.post(reverse("filters_run", args=[project.pk])).status_code == 403
    assert client.post(reverse("filters_config", args=[project.pk]), {}).status_code == 403


@pytest.mark.django_db
def test_outsiders_get_404_everywhere(project, charlie, verdict):
    client = login(charlie)
    for name in ("filters_list", "filters_config", "filters_progress"):
        assert client.get(reverse(name, args=[project.pk])).status_code == 404
    assert client.post(reverse("filters_run", args=[project.pk])).status_code == 404
    assert client.post(reverse("verdict_restore", args=[verdict.completion_id])).status_code == 404


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_login(client, project):
    response = client.get(reverse("filters_list", args=[project.pk]))
    assert response.status_code == 302 and "/login" in response["Location"]


@pytest.mark.django_db
def test_the_config_page_saves_and_shows_inline_errors(alice_client, project):
    url = reverse("filters_config", args=[project.pk])
    page = alice_client.get(url).content.decode()
    assert "As an AI language model" in page and 'name="dedup_threshold" value="0.8"' in page
    bad = alice_client.post(
        url,
        {
            "enabled": ["empty", "judge"],
            "min_chars": "9",
            "max_chars": "3",
            "dedup_threshold": "2",
            "judge_rubric": "x",
        },
    )
    assert bad.status_code == 422
    html = bad.content.decode()
    assert "The maximum must be at least the minimum." in html
    assert "Enter a number from 0.3 to 1." in html
    assert "Pick a teacher to act as judge" in html
    assert 'value="9"' in html  # what was typed stays in the form
    ok = alice_client.post(
        url,
        {
            "enabled": ["empty", "refusal"],
            "min_chars": "2",
            "max_chars": "900",
            "refusal_phrases": "Nope\nNo way",
            "repetition_n": "4",
            "repetition_threshold": "0.5",
            "echo_threshold": "0.9",
            "reference_mode": "numeric",
            "dedup_threshold": "0.85",
            "judge_teacher_id": "",
            "judge_rubric": "Be fair.",
            "judge_threshold": "7",
        },
    )
    assert ok.status_code == 302
    project.refresh_from_db()
    stored = project.settings["filters"]
    assert stored["enabled"] == ["empty", "refusal"] and stored["refusal_phrases"] == [
        "Nope",
        "No way",
    ]
    assert stored["dedup_threshold"] == 0.85 and stored["reference_mode"] == "numeric"


@pytest.mark.django_db
def test_the_run_button_queues_a_run_and_the_progress_partial_stops_polling_when_done(
    alice_client, project, job, django_capture_on_commit_callbacks
):
    CompletionFactory(job=job, text="")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = alice_client.post(
            reverse("filters_run", args=[project.pk]), {"job_id": job.pk}, **HX
        )
    assert response.status_code == 200 and len(callbacks) == 1
    html = response.content.decode()
    assert (
        'id="filter-progress"' in html and 'hx-trigger="every 1s"' in html and "<html" not in html
    )
    run = FilterRun.objects.get(project=project)
    assert run.status == RunStatus.QUEUED and run.job == job

    again = alice_client.post(reverse("filters_run", args=[project.pk]), **HX)
    assert "already queued" in again.content.decode()

    progress_url = reverse("filters_progress", args=[project.pk])
    assert alice_client.get(progress_url, **HX).status_code == 200
    execute_filter_run.run(run.pk)  # what the worker does
    done = alice_client.get(progress_url, **HX)
    assert done.status_code == 286
    assert b"1 filtered out" in done.content and b"every 1s" not in done.content
    assert CompletionVerdict.objects.get(completion__job=job).flags == ["empty"]


@pytest.mark.django_db
def test_the_run_button_without_htmx_redirects_with_a_message(
    alice_client, project, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = alice_client.post(reverse("filters_run", args=[project.pk]), follow=True)
    assert b"Filter run queued for the whole project" in response.content


@pytest.mark.django_db
def test_the_project_page_has_the_filters_section(alice_client, project, verdict):
    html = alice_client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "Automatic filters" in html
    assert f"{reverse('filters_list', args=[project.pk])}?state=flagged&amp;flag=refusal" in html
    assert reverse("filters_config", args=[project.pk]) in html


@pytest.mark.django_db
def test_judge_errors_are_counted_and_listed_with_the_reply(alice_client, project, job):
    unreadable = CompletionVerdictFactory(
        completion=CompletionFactory(job=job),
        state=VerdictState.PASSED,
        flags=[],
        reasons={"judge": "The judge failed, so no score: not JSON."},
        judge_error="The judge's reply is not the JSON object asked for.",
        judge_reply="Rubric: score from 1 to 10 <b>echoed</b>",
    )
    scored = CompletionVerdictFactory(
        completion=CompletionFactory(job=job), state=VerdictState.PASSED, flags=[], judge_score=8
    )
    url = reverse("filters_list", args=[project.pk])
    html = alice_client.get(url).content.decode()
    assert "<strong>1</strong> judge errors" in html and "?state=judge_error" in html
    html = alice_client.get(url, {"state": "judge_error"}).content.decode()
    assert f"Completion #{unreadable.completion_id}" in html
    assert f"Completion #{scored.completion_id}" not in html
    assert "Judge error: The judge&#x27;s reply is not the JSON object asked for." in html
    assert "score from 1 to 10 &lt;b&gt;echoed&lt;/b&gt;" in html
    project_page = alice_client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "have no judge score" in project_page


@pytest.mark.django_db
def test_the_config_page_saves_the_within_prompt_setting(alice_client, project):
    url = reverse("filters_config", args=[project.pk])
    assert 'name="dedup_within_prompt" >' in alice_client.get(url).content.decode()
    form = {
        "enabled": ["empty"],
        "min_chars": "1",
        "max_chars": "900",
        "repetition_n": "3",
        "repetition_threshold": "0.3",
        "echo_threshold": "0.8",
        "reference_mode": "normalised",
        "dedup_threshold": "0.8",
        "judge_rubric": "Be fair.",
        "judge_threshold": "6",
    }
    assert alice_client.post(url, {**form, "dedup_within_prompt": "on"}).status_code == 302
    project.refresh_from_db()
    assert project.settings["filters"]["dedup_within_prompt"] is True
    assert 'name="dedup_within_prompt" checked' in alice_client.get(url).content.decode()
    assert alice_client.post(url, form).status_code == 302  # an unticked box is off
    project.refresh_from_db()
    assert project.settings["filters"]["dedup_within_prompt"] is False
