from __future__ import annotations

import pytest

from distillapp.accounts.models import Role
from distillapp.review.models import Review
from distillapp.review.services import review_queue_sync
from tests.factories import (
    CompletionFactory,
    GenerationJobFactory,
    MembershipFactory,
    OrganizationFactory,
    ProjectFactory,
    PromptFactory,
    TeacherFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _project_with(texts, *, prompt_messages=None):
    org = OrganizationFactory()
    reviewer = UserFactory(username="rita")
    MembershipFactory(user=reviewer, org=org, role=Role.REVIEWER)
    project = ProjectFactory(org=org, settings={"review": {"order": "plain"}})
    teacher = TeacherFactory(project=project)
    job = GenerationJobFactory(teacher=teacher, project=project)
    completions = []
    for text in texts:
        prompt = PromptFactory(prompt_set=job.prompt_set)
        if prompt_messages is not None:
            prompt.messages = prompt_messages
            prompt.save()
        completions.append(CompletionFactory(job=job, prompt=prompt, text=text))
    review_queue_sync(project=project, force=True)
    return project, reviewer, completions


def _current_id(page) -> int:
    return int(page.get_attribute("#review-current", "data-completion-id"))


def _wait_for_next(page, previous: int) -> int:
    page.wait_for_function(
        "prev => { const el = document.getElementById('review-current');"
        " return el && el.dataset.completionId !== String(prev); }",
        arg=previous,
    )
    # The next item's prefetch has landed too, so the server is idle when the test reads the DB
    # (the live server shares one SQLite connection between its threads and the test).
    page.wait_for_selector("#review-next-id", state="attached")
    return _current_id(page)


def test_a_reviewer_works_the_queue_with_the_keyboard(page, log_in):
    project, rita, completions = _project_with([f"Answer number {i}." for i in range(5)])
    url = f"/projects/{project.pk}/review/"
    log_in(page, "rita", "password", url)

    first = _current_id(page)
    assert page.inner_text("#progress-mine-done") == "0"
    page.wait_for_selector("#review-next-id", state="attached")  # the next item is claimed ahead

    page.keyboard.press("?")
    assert page.is_visible("#review-help")
    page.keyboard.press("?")
    assert not page.is_visible("#review-help")

    page.keyboard.press("a")
    second = _wait_for_next(page, first)
    page.wait_for_function(
        "() => document.getElementById('progress-mine-done').textContent === '1'"
    )
    assert Review.objects.get(completion_id=first).decision == "approve"

    page.keyboard.press("r")
    page.keyboard.press("2")
    third = _wait_for_next(page, second)
    assert Review.objects.values_list("decision", "reason").get(completion_id=second) == (
        "reject",
        "Unhelpful",
    )

    page.keyboard.press("e")
    textarea = page.locator("#review-current textarea[name=edited_text]")
    assert textarea.evaluate("el => el === document.activeElement")
    # typing a, r, s, u into the field must not fire any shortcut
    textarea.fill("")
    textarea.type("A rewritten answer: yes, sure.")
    page.keyboard.press("Control+Enter")
    fourth = _wait_for_next(page, third)
    review = Review.objects.get(completion_id=third)
    assert (review.decision, review.edited_text, review.original_text) == (
        "edit",
        "A rewritten answer: yes, sure.",
        completions[2].text,
    )
    assert Review.objects.count() == 3

    page.keyboard.press("u")
    assert _wait_for_next(page, fourth) == third
    page.wait_for_function(
        "() => document.getElementById('progress-mine-done').textContent === '2'"
    )
    assert not Review.objects.filter(completion_id=third).exists()

    # a failed save says so and keeps the item
    page.route("**/decide/", lambda route: route.fulfill(status=500, body="boom"))
    page.keyboard.press("a")
    page.wait_for_selector("#htmx-error:not([hidden])")
    assert "Not saved" in page.inner_text("#htmx-error")
    assert _current_id(page) == third
    assert not Review.objects.filter(completion_id=third).exists()
    page.unroute("**/decide/")
    page.click("#review-current [data-key=a]")
    _wait_for_next(page, third)
    assert Review.objects.get(completion_id=third).decision == "approve"
    assert page.is_hidden("#htmx-error")


PAYLOAD = "\n\n".join(
    [
        "<script>window.__xss = 1</script>",
        '<img src="/sentinel-xss/img" onerror="window.__xss = 1">',
        '<div hx-get="/sentinel-xss/hx" hx-trigger="load">hx</div>',
        "[click me](javascript:window.__xss=1)",
        '<svg onload="window.__xss = 1"></svg>',
        '<a href="/sentinel-xss/a" hx-post="/sentinel-xss/post" hx-trigger="mouseover">hover</a>',
        "![pic](/sentinel-xss/md-img)",
    ]
)


def test_an_xss_completion_does_not_run_or_fire_requests(page, log_in):
    project, _rita, _c = _project_with(
        [PAYLOAD], prompt_messages=[{"role": "user", "content": PAYLOAD}]
    )
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    log_in(page, "rita", "password", f"/projects/{project.pk}/review/")
    page.wait_for_selector("#review-current")
    page.wait_for_load_state("networkidle")
    for text in ("click me", "hover", "hx"):
        for link in (
            page.locator("#review-current .completion-body").get_by_text(text, exact=True).all()
        ):
            link.hover()
            link.click()
    page.wait_for_timeout(300)
    assert page.evaluate("() => typeof window.__xss") == "undefined"
    assert not [url for url in requests if "sentinel-xss" in url]
