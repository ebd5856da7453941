"""A second person joins through an invitation link and reviews, all in Chromium."""

from __future__ import annotations

import pytest

from distillapp.accounts.models import Membership, Role
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


def test_a_new_teammate_joins_by_invitation_and_reviews(browser, live_server, page, log_in):
    org = OrganizationFactory(name="Acme")
    MembershipFactory(user=UserFactory(username="olga"), org=org, role=Role.OWNER)
    project = ProjectFactory(org=org, name="Support bot", settings={"review": {"order": "plain"}})
    job = GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))
    for text in ("First answer.", "Second answer."):
        CompletionFactory(job=job, prompt=PromptFactory(prompt_set=job.prompt_set), text=text)
    review_queue_sync(project=project, force=True)

    # The owner creates a reviewer invitation on the Members page and copies the link.
    log_in(page, "olga", "password", f"/orgs/{org.pk}/members/")
    page.select_option("#invitations select[name=role]", "reviewer")
    page.click("#invitations button[type=submit]")
    link = page.inner_text("#invitation-link").strip()
    assert "/invite/?token=inv_" in link

    # The newcomer, in another browser profile, opens it, signs up and lands in the organisation.
    newcomer = browser.new_context(base_url=live_server.url)
    newcomer.set_default_timeout(10_000)
    nina = newcomer.new_page()
    nina.goto(link)
    assert "Join Acme" in nina.inner_text("h1")
    nina.fill("input[name=username]", "nina")
    nina.fill("input[name=password]", "a-long-secret")
    nina.fill("input[name=password2]", "a-long-secret")
    nina.click("button[type=submit]")
    nina.wait_for_url(f"{live_server.url}/")
    assert "Welcome to Acme" in nina.inner_text(".messages")
    assert Membership.objects.get(user__username="nina", org=org).role == Role.REVIEWER

    # She opens the review queue and approves the first item.
    nina.goto(f"/projects/{project.pk}/review/")
    first = nina.get_attribute("#review-current", "data-completion-id")
    nina.wait_for_selector("#review-next-id", state="attached")
    nina.click("#review-current [data-key=a]")
    nina.wait_for_function(
        "prev => { const el = document.getElementById('review-current');"
        " return el && el.dataset.completionId !== prev; }",
        arg=first,
    )
    nina.wait_for_selector("#review-next-id", state="attached")
    review = Review.objects.get(completion_id=int(first))
    assert (review.reviewer.username, review.decision) == ("nina", "approve")

    # The link was single-use.
    nina.goto(link)
    assert "not valid any more" in nina.inner_text("main")
    newcomer.close()
