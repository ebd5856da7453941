"""The review screen at laptop and desktop sizes: the decision bar stays in view while a long
completion scrolls, and the counts beside it are exact after each action."""

from __future__ import annotations

import os

import pytest

from distillapp.accounts.models import Role
from distillapp.review.services import review_bulk_apply, review_queue_sync
from tests.factories import (
    CompletionFactory,
    CompletionVerdictFactory,
    GenerationJobFactory,
    MembershipFactory,
    OrganizationFactory,
    ProjectFactory,
    PromptFactory,
    TeacherFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = "\n\n".join(
    f"**Step {i}.** " + "The teacher explains the reasoning in some detail here. " * 6
    for i in range(1, 25)
)
SIZES = [(1280, 720), (1920, 1080)]
BAR = ["[data-key=a]", "[data-key=r]", "[data-key=e]", "[data-key=s]"]


def _project(n: int = 6):
    org = OrganizationFactory(name="Acme")
    rita = UserFactory(username="rita")
    MembershipFactory(user=rita, org=org, role=Role.REVIEWER)
    admin = UserFactory(username="ada")
    MembershipFactory(user=admin, org=org, role=Role.ADMIN)
    project = ProjectFactory(
        org=org,
        name="Support bot",
        settings={"review": {"order": "plain"}},
        guidelines_md="Approve answers that are **correct** and polite.\n\n- Reject refusals.",
    )
    teacher = TeacherFactory(project=project, name="gpt-teacher")
    job = GenerationJobFactory(
        teacher=teacher,
        project=project,
        teacher_snapshot={
            "name": "gpt-teacher",
            "model": "teacher-model-70b",
            "decoding": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 1024, "n": 2, "seed": 7},
        },
    )
    for i in range(n):
        prompt = PromptFactory(
            prompt_set=job.prompt_set, text=f"Explain step by step how to solve problem {i}."
        )
        for s in range(2):
            c = CompletionFactory(
                job=job,
                prompt=prompt,
                sample_index=s,
                text=LONG,
                completion_tokens=812,
                latency_ms=2310,
                mean_logprob=-0.41,
            )
            CompletionVerdictFactory(
                completion=c,
                state="passed",
                flags=[],
                judge_score=6.5,
                reasons={"judge": "Close to the threshold."},
                judge_rationale="Mostly right; one step is vague.",
            )
    review_queue_sync(project=project, force=True)
    return project, admin


def _in_view(page, selector: str) -> bool:
    return page.eval_on_selector(
        selector,
        "el => { const r = el.getBoundingClientRect();"
        " return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0"
        " && r.bottom <= window.innerHeight && r.right <= window.innerWidth; }",
    )


def _open_queue(page, log_in, project, size):
    page.set_viewport_size({"width": size[0], "height": size[1]})
    log_in(page, "rita", "password", f"/projects/{project.pk}/review/")
    page.wait_for_selector("#review-next-id", state="attached")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_decision_bar_stays_in_view_while_a_long_completion_scrolls(page, log_in, size):
    project, _admin = _project(2)
    _open_queue(page, log_in, project, size)
    # The completion is longer than the window: the page scrolls.
    assert page.evaluate("() => document.documentElement.scrollHeight > window.innerHeight * 2")
    for scroll in (0, 900, 2500):
        page.evaluate("y => window.scrollTo(0, y)", scroll)
        for selector in BAR:
            assert _in_view(page, f"#review-bar {selector}"), (scroll, selector)
    # Teacher and decoding settings are folded away until asked for.
    assert not page.is_visible(".review-teacher dl")
    page.click(".review-teacher summary")
    assert page.is_visible(".review-teacher dl")

    page.evaluate("() => window.scrollTo(0, 0)")
    page.keyboard.press("r")
    page.wait_for_selector("[data-reason-key='1']", state="visible")
    for key in range(1, 7):
        assert _in_view(page, f"[data-reason-key='{key}']"), key
    for selector in BAR:
        assert _in_view(page, f"#review-bar {selector}"), selector

    page.keyboard.press("Escape")
    page.keyboard.press("e")
    page.wait_for_selector("textarea[name=edited_text]", state="visible")
    assert _in_view(page, "textarea[name=edited_text]")
    assert _in_view(page, "[data-edit-form] button[type=submit]")


def test_key_hints_are_legible_on_the_primary_buttons(page, log_in):
    project, _admin = _project(1)
    _open_queue(page, log_in, project, SIZES[0])
    page.keyboard.press("e")
    for selector in ("[data-key=a] kbd", "[data-edit-form] button[type=submit] kbd"):
        colours = page.eval_on_selector(
            selector,
            "el => { const s = getComputedStyle(el); const b = getComputedStyle(el.closest('button'));"
            " return [s.color, s.backgroundColor, b.backgroundColor]; }",
        )
        text, background, button = colours
        shown_on = button if background in ("rgba(0, 0, 0, 0)", "transparent") else background
        assert text != shown_on, (selector, colours)


def _counts(page) -> tuple[str, str, str]:
    return (
        page.inner_text("#progress-done"),
        page.inner_text("#progress-remaining"),
        page.inner_text("#progress-mine-done"),
    )


def _wait_counts(page, done: int, remaining: int, mine: int) -> None:
    page.wait_for_function(
        "([d, r, m]) => document.getElementById('progress-done').textContent === d"
        " && document.getElementById('progress-remaining').textContent === r"
        " && document.getElementById('progress-mine-done').textContent === m",
        arg=[str(done), str(remaining), str(mine)],
    )
    page.wait_for_selector("#review-next-id", state="attached")
    assert _counts(page) == (str(done), str(remaining), str(mine))


def _current(page) -> int:
    return int(page.get_attribute("#review-current", "data-completion-id"))


def _press_and_wait(page, key: str) -> None:
    before = _current(page)
    page.keyboard.press(key)
    page.wait_for_function(
        "prev => { const el = document.getElementById('review-current');"
        " return el && el.dataset.completionId !== String(prev); }",
        arg=before,
    )


def test_counts_are_exact_after_each_decision_undo_and_bulk_approve(page, log_in):
    project, admin = _project(5)  # 10 completions
    _open_queue(page, log_in, project, SIZES[0])
    assert _counts(page) == ("0", "10", "0")
    # Nothing to undo yet: no Undo button, and `u` does nothing.
    assert page.locator("[data-key=u]").count() == 0

    for n in range(1, 6):
        _press_and_wait(page, "a")
        _wait_counts(page, n, 10 - n, n)
    assert page.is_visible("#review-bar [data-key=u]")

    decided = _current(page)
    _press_and_wait(page, "u")
    _wait_counts(page, 4, 6, 4)
    undone = _current(page)
    assert undone != decided
    # The undone item is on screen now; a reload keeps it there (it comes back first).
    page.reload()
    page.wait_for_selector("#review-next-id", state="attached")
    assert _current(page) == undone

    # An admin approves the rest in bulk; the next decision shows the new counts at once.
    review_bulk_apply(project=project, actor=admin, decision="approve")
    page.reload()
    page.wait_for_selector("#review-empty")
    assert (page.inner_text("#progress-done"), page.inner_text("#progress-remaining")) == (
        "10",
        "0",
    )
    assert page.is_visible("#review-empty [data-key=u]")


@pytest.mark.skipif(not os.environ.get("REVIEW_SCREENSHOT"), reason="set REVIEW_SCREENSHOT")
def test_screenshot(page, log_in):
    """REVIEW_SCREENSHOT=/tmp/review.png saves the screen at 1280×720 (and -reject.png after r)."""
    project, _admin = _project(6)
    _open_queue(page, log_in, project, SIZES[0])
    page.screenshot(path=os.environ["REVIEW_SCREENSHOT"])
    page.keyboard.press("r")
    page.screenshot(path=os.environ["REVIEW_SCREENSHOT"].replace(".png", "-reject.png"))
