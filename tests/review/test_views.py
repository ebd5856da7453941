from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from distillapp.review import services
from distillapp.review.models import BulkAction, ItemState, Review, ReviewItem
from tests.conftest import login
from tests.factories import CompletionVerdictFactory

HX = {"HTTP_HX_REQUEST": "true"}


def _queue(project):
    return reverse("review_queue", args=[project.pk])


def test_the_queue_page_shows_one_completion_with_its_context(project, bob, make_completions):
    a, b = make_completions(project, 1, samples=2, sync=False)
    CompletionVerdictFactory(
        completion=a, state="passed", flags=[], judge_score=6.5, reasons={"judge": "Close call."}
    )
    CompletionVerdictFactory(completion=b, state="passed", flags=[], judge_score=9)
    services.review_queue_sync(project=project, force=True)

    response = login(bob).get(_queue(project))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="review-current"' in html and f'data-completion-id="{a.pk}"' in html
    assert a.prompt.text in html and "Close call." in html and "6.5" in html
    assert "teacher-model" in html and "temperature" in html
    assert "Pick as best" in html and b.text in html  # the other sample beside it
    assert (
        "Factually wrong" in html and "Be <strong>helpful</strong>" in html
    )  # reasons and guidelines
    assert 'hx-post="' + reverse("review_prefetch", args=[project.pk]) in html


def test_a_viewer_sees_progress_but_cannot_review(project, vera, make_completions):
    make_completions(project, 1)
    response = login(vera).get(_queue(project))
    assert response.status_code == 200
    assert "reviewer role" in response.content.decode()
    assert not ReviewItem.objects.filter(state=ItemState.LEASED).exists()
    c = ReviewItem.objects.get().completion
    assert (
        login(vera)
        .post(reverse("review_decide", args=[project.pk, c.pk]), {"decision": "approve"})
        .status_code
        == 403
    )
    assert login(vera).post(reverse("review_undo", args=[project.pk])).status_code == 403


def test_outsiders_get_404_everywhere(project, charlie, make_completions):
    (c,) = make_completions(project, 1)
    client = login(charlie)
    for name, args in [
        ("review_queue", [project.pk]),
        ("review_decisions", [project.pk]),
        ("review_settings", [project.pk]),
        ("review_bulk", [project.pk]),
        ("review_adjudication", [project.pk]),
    ]:
        assert client.get(reverse(name, args=args)).status_code == 404, name
    for name, args in [
        ("review_decide", [project.pk, c.pk]),
        ("review_pick_best", [project.pk, c.pk]),
        ("review_adjudicate", [project.pk, c.pk]),
        ("review_prefetch", [project.pk]),
        ("review_undo", [project.pk]),
        ("review_bulk_undo", [project.pk]),
        ("review_refresh", [project.pk]),
    ]:
        assert client.post(reverse(name, args=args)).status_code == 404, name


def test_admin_pages_are_refused_to_reviewers(project, bob):
    client = login(bob)
    for name in ("review_settings", "review_bulk", "review_adjudication"):
        assert client.get(reverse(name, args=[project.pk])).status_code == 403


def test_anonymous_users_are_sent_to_log_in(project, client):
    response = client.get(_queue(project))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_deciding_through_htmx_saves_and_shows_the_prefetched_item(project, bob, make_completions):
    make_completions(project, 3)
    client = login(bob)
    html = client.get(_queue(project)).content.decode()
    current = int(re.search(r'id="review-current" data-completion-id="(\d+)"', html).group(1))
    prefetch = client.post(
        reverse("review_prefetch", args=[project.pk]), {"exclude": current}, **HX
    ).content.decode()
    next_id = int(re.search(r'name="next_id" value="(\d+)"', prefetch).group(1))
    assert next_id != current

    response = client.post(
        reverse("review_decide", args=[project.pk, current]),
        {"decision": "reject", "reason": "Unhelpful", "next_id": next_id, "duration_ms": "900"},
        **HX,
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert f'data-completion-id="{next_id}"' in body
    assert 'id="review-progress" hx-swap-oob="true"' in body
    review = Review.objects.get(completion_id=current)
    assert (review.decision, review.reason, review.duration_ms) == ("reject", "Unhelpful", 900)


def test_a_failed_save_answers_422_with_the_reason_and_keeps_the_lease(
    project, bob, make_completions
):
    make_completions(project, 1)
    client = login(bob)
    client.get(_queue(project))
    item = ReviewItem.objects.get()
    response = client.post(
        reverse("review_decide", args=[project.pk, item.completion_id]),
        {"decision": "reject", "reason": "x"},
        **HX,
    )
    assert response.status_code == 422 and "reason" in response.content.decode()
    assert response["Content-Type"].startswith("text/plain")
    assert ReviewItem.objects.get().state == ItemState.LEASED and not Review.objects.exists()


def test_buttons_work_without_javascript(project, bob, make_completions):
    make_completions(project, 2)
    client = login(bob)
    client.get(_queue(project))
    item = ReviewItem.objects.get(state=ItemState.LEASED)
    response = client.post(
        reverse("review_decide", args=[project.pk, item.completion_id]), {"decision": "approve"}
    )
    assert response.status_code == 302 and response["Location"] == _queue(project)
    assert client.post(reverse("review_undo", args=[project.pk])).status_code == 302
    assert not Review.objects.exists()


def test_undo_through_htmx_shows_the_item_again(project, bob, make_completions):
    make_completions(project, 2)
    client = login(bob)
    client.get(_queue(project))
    item = ReviewItem.objects.get(state=ItemState.LEASED)
    client.post(
        reverse("review_decide", args=[project.pk, item.completion_id]),
        {"decision": "approve"},
        **HX,
    )
    response = client.post(reverse("review_undo", args=[project.pk]), **HX)
    assert f'data-completion-id="{item.completion_id}"' in response.content.decode()
    empty = login(bob).post(reverse("review_undo", args=[project.pk]), **HX)
    assert empty.status_code == 422 and "Nothing to undo" in empty.content.decode()


def test_pick_best_re_renders_the_samples_panel(project, bob, make_completions):
    a, b = make_completions(project, 1, samples=2)
    client = login(bob)
    response = client.post(
        reverse("review_pick_best", args=[project.pk, b.pk]), {"current": a.pk}, **HX
    )
    assert response.status_code == 200 and 'id="review-samples"' in response.content.decode()
    assert "best" in response.content.decode()


def test_admins_edit_review_settings_with_inline_errors(project, adam):
    client = login(adam)
    url = reverse("review_settings", args=[project.pk])
    bad = client.post(url, {"reasons": "", "overlap": "0", "lease_seconds": "60", "order": "plain"})
    assert bad.status_code == 422 and "at least one reject reason" in bad.content.decode()
    ok = client.post(
        url, {"reasons": "Wrong\nRude", "overlap": "2", "lease_seconds": "120", "order": "plain"}
    )
    assert ok.status_code == 302
    project.refresh_from_db()
    assert project.settings["review"] == {
        "reasons": ["Wrong", "Rude"],
        "overlap": 2,
        "lease_seconds": 120,
        "order": "plain",
    }


def test_admins_refresh_the_queue_and_reviewers_may_not(project, adam, bob, make_completions):
    make_completions(project, 2, sync=False)
    url = reverse("review_refresh", args=[project.pk])
    assert login(bob).post(url).status_code == 403
    assert login(adam).post(url).status_code == 302
    assert ReviewItem.objects.filter(project=project, state=ItemState.OPEN).count() == 2


def test_bulk_shows_the_count_before_applying_and_can_be_undone(project, adam, make_completions):
    make_completions(project, 3)
    client = login(adam)
    url = reverse("review_bulk", args=[project.pk])
    preview = client.get(url, {"decision": "approve", "no_flags": "1"})
    assert '<strong id="bulk-count">3</strong>' in preview.content.decode()
    assert (
        client.post(
            url, {"decision": "approve", "no_flags": "1", "expected_count": "3"}
        ).status_code
        == 302
    )
    assert ReviewItem.objects.filter(state=ItemState.DONE, decision="approve").count() == 3
    action = BulkAction.objects.get()
    client.post(reverse("review_bulk_undo", args=[project.pk]), {"bulk_action_id": action.pk})
    assert ReviewItem.objects.filter(state=ItemState.OPEN).count() == 3


def test_reviewers_see_only_their_own_decisions_and_admins_see_all(
    project, bob, adam, make_completions
):
    make_completions(project, 2)
    for who in (bob, adam):
        c = services.review_claim_next(project=project, reviewer=who)
        services.review_decide(completion=c, reviewer=who, decision="approve")
    url = reverse("review_decisions", args=[project.pk])
    mine = login(bob).get(url).content.decode()
    assert mine.count("<tr>") == 2  # header + bob's one row
    everyone = login(adam).get(url).content.decode()
    assert everyone.count("<tr>") == 3 and "bob" in everyone


def test_the_project_page_shows_review_progress_and_agreement(project, alice, make_completions):
    make_completions(project, 2)
    html = login(alice).get(reverse("project_detail", args=[project.pk])).content.decode()
    assert 'id="review-section"' in html and "Open the review queue" in html
    assert "Adjudication (0)" in html and "Bulk actions" in html and "agreement κ" in html


# --- untrusted output ---------------------------------------------------------------------------

XSS_CORPUS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<div hx-get="/sentinel" hx-trigger="load">hx</div>',
    '<a href="javascript:alert(1)">click</a>',
    '<svg onload="window.__xss=1"><circle r="5"/></svg>',
    "[x](javascript:alert(1))",
    "[y](JaVaScRiPt:alert(1))",
    '![img](x" onerror="alert(1))',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<details open ontoggle="window.__xss=1">',
    "<style>body{display:none}</style>",
    '<form action="/sentinel"><button>go</button></form>',
    "```html\n<script>window.__xss=1</script>\n```",
    '<a href="/sentinel" hx-post="/sentinel" hx-trigger="mouseover">m</a>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
]

DANGEROUS_TAGS = {
    "script",
    "img",
    "svg",
    "iframe",
    "form",
    "style",
    "details",
    "math",
    "object",
    "embed",
    "button",
    "input",
}


class _TagAudit(HTMLParser):
    """Collects every element rendered inside an `hx-disable` container, and every script tag."""

    VOID = {
        "br",
        "hr",
        "img",
        "input",
        "meta",
        "link",
        "source",
        "area",
        "base",
        "col",
        "embed",
        "wbr",
    }

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.inside: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.regions = 0

    def handle_starttag(self, tag, attrs):
        attrs_d = dict(attrs)
        in_box = any(flag for _t, flag in self.stack)
        if tag == "script":
            self.scripts.append(attrs_d)
        if in_box:
            self.inside.append((tag, attrs_d))
        opens_box = "hx-disable" in attrs_d
        self.regions += int(opens_box and not in_box)
        if tag not in self.VOID:
            self.stack.append((tag, opens_box or in_box))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


@pytest.mark.parametrize("payload", XSS_CORPUS)
def test_nothing_dangerous_survives_in_the_review_page(project, bob, make_completions, payload):
    a, b = make_completions(project, 1, samples=2, sync=False)
    for c in (a, b):
        c.text = payload
        c.save()
    a.prompt.messages = [
        {"role": "system", "content": payload},
        {"role": "user", "content": payload},
    ]
    a.prompt.save()
    CompletionVerdictFactory(
        completion=a, state="passed", flags=[], reasons={"judge": payload}, judge_rationale=payload
    )
    services.review_queue_sync(project=project, force=True)

    html = login(bob).get(_queue(project)).content.decode()
    audit = _TagAudit()
    audit.feed(html)
    assert audit.regions >= 5  # system + user messages, completion, sibling, verdict reasons
    for tag, attrs in audit.inside:
        assert tag not in DANGEROUS_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith(("on", "hx-", "data-hx")), (tag, name)
            assert name not in {"style", "src", "action", "formaction"}, (tag, name)
            assert not (value or "").strip().lower().startswith("javascript:"), (tag, name, value)
    # the only scripts are our own files, none inline
    assert all(s.get("src") for s in audit.scripts)
    assert "<script>window.__xss" not in html
