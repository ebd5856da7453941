"""Evaluation in Chromium: choose models and sets, launch, watch progress, read the dashboard,
open the side by side, download the HTML report."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from distillapp.evaluation.models import EvalRun
from tests.evaluation.conftest import (  # noqa: F401 - fixtures
    api_teacher,
    eval_sets,
    fake_openai,
    judge_server,
    judge_teacher,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_launch_watch_dashboard_side_by_side_and_report(
    page,
    log_in,
    project,
    alice,
    api_teacher,  # noqa: F811
    judge_teacher,  # noqa: F811
    eval_sets,  # noqa: F811
    sent_tasks,
):
    from workers.tasks.evaluation import run_eval

    log_in(page, "alice", "password", f"/projects/{project.pk}/")
    page.click("#new-eval-run")
    page.wait_for_url("**/eval-runs/new/")
    page.check(f"input[name=model][value='teacher:{api_teacher.pk}']")
    page.check(f"input[name=model][value='teacher:{judge_teacher.pk}']")
    for s in eval_sets:
        page.check(f"input[name=eval_set][value='{s.pk}']")
    page.select_option("#judge", str(judge_teacher.pk))
    page.click("#launch-eval")
    page.wait_for_url("**/eval-runs/*/")
    assert page.inner_text("#eval-status").lower() == "queued"
    run = EvalRun.objects.get()
    assert [t.args for t in sent_tasks if t.name == "workers.tasks.evaluation.run_eval"] == [
        (run.pk,)
    ]
    # In a thread of its own: Playwright keeps an event loop in this one, and the API teacher's
    # runner starts its own (as it does on a worker).
    worker = threading.Thread(target=run_eval, args=(run.pk,))
    worker.start()
    worker.join(timeout=120)
    assert EvalRun.objects.get().status == "succeeded", EvalRun.objects.get().message
    # The polled progress partial sees the end and reloads the page with the scores.
    page.wait_for_selector("#leaderboard", timeout=15_000)
    assert "Succeeded" in page.inner_text("#eval-progress")
    assert "Judge–human agreement" in page.inner_text("#agreement")
    page.wait_for_selector("#pareto-cost .uplot")
    assert page.locator("#pareto-cost").get_attribute("data-drawn") == "2"
    with page.expect_download() as info:
        page.click("#download-report")
    report = Path(info.value.path()).read_text(encoding="utf-8")
    assert "Lineage" in report and eval_sets[0].sha256 in report
    page.click("#open-side-by-side")
    page.wait_for_url("**/samples/")
    page.select_option("select[name=outcome]", "win")
    page.click("#sample-filters button[type=submit]")
    page.wait_for_url("**outcome=win**")
    # The judge prefers the fake teacher's answers in both orders: the other model never wins.
    assert page.locator(".sample").count() == 0
    page.select_option("select[name=outcome]", "loss")
    page.click("#sample-filters button[type=submit]")
    page.wait_for_url("**outcome=loss**")
    assert page.locator(".sample").count() == 7
    assert "the teacher" in page.inner_text(".sample .verdict")
    # The owner gives her own verdict on the first pair; the agreement on the dashboard uses it.
    first = page.locator(".sample").first
    item_id = first.get_attribute("data-item")
    first.locator(".human-verdict button[value=baseline]").click()
    page.wait_for_url(f"**outcome=loss*#item-{item_id}")
    chosen = page.locator(f"#item-{item_id} .human-verdict button[aria-pressed=true]")
    assert chosen.get_attribute("value") == "baseline"
    page.goto(page.url.split("/samples/")[0] + "/")
    assert "κ" in page.inner_text("#agreement") and "on 1 item " in page.inner_text("#agreement")
    assert "reviewers' own verdicts" in page.inner_text("#agreement")
