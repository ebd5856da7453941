"""Datasets in Chromium: the build form's live preview, a build followed to its version page and a
download, and the completions browser (filter, load more, open one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillapp.datasets.models import Dataset
from tests.datasets import conftest as datasets_conftest
from workers.tasks.datasets import build_dataset_version

# The datasets tests' fixtures (a small reviewed project, a media root per test).
media = datasets_conftest.media
reviewed = datasets_conftest.reviewed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _count(page) -> str:
    return page.inner_text("#preview-counts [data-count=rows]")


def test_build_form_preview_build_progress_and_download(
    page,
    log_in,
    project,
    alice,
    reviewed,
    sent_tasks,
):
    dataset = Dataset.objects.create(project=project, name="maths", created_by=alice)
    log_in(page, "alice", "password", f"/datasets/{dataset.pk}/")
    page.wait_for_selector("#preview-counts")
    everything = _count(page)
    assert everything == "5"  # six approved rows, one a duplicate pair
    page.select_option("#r-per-prompt", "one")
    page.wait_for_function(
        "n => document.querySelector('#preview-counts [data-count=rows]').textContent !== n",
        arg=everything,
    )
    assert _count(page) == "4"
    page.select_option("#r-reasoning", "match_reference")
    page.wait_for_function(
        "() => document.querySelector('#preview-counts [data-count=rows]').textContent === '2'"
    )
    page.click("#build-form button[type=submit]")
    page.wait_for_url("**/dataset-versions/*/")
    assert page.locator("#version-progress .badge").inner_text().lower() in ("queued", "running")
    for task in sent_tasks:
        if task.name == "workers.tasks.datasets.build_dataset_version":
            build_dataset_version(*task.args)
    # The polled progress partial turns into the built version with its downloads.
    link = page.wait_for_selector("a[href*='format=jsonl']", timeout=15_000)
    assert "Succeeded" in page.inner_text("#version-progress")
    # The page reloaded itself once built: the diff and lineage outside the partial are there.
    assert page.locator("h2", has_text="Lineage").count() == 1
    assert page.locator("h2", has_text="Changes since").count() == 1
    with page.expect_download() as info:
        link.click()
    body = Path(info.value.path()).read_text(encoding="utf-8")
    assert body.count("\n") == 2 and '"assistant"' in body and "8" in body


def test_completions_browser_filters_pages_and_opens_one(
    page,
    log_in,
    project,
    alice,
    reviewed,
):
    edited = reviewed["c"][(1, 0)]
    log_in(page, "alice", "password", f"/projects/{project.pk}/completions/")
    assert page.locator("tr.completion-row").count() == 9
    page.select_option("#completion-filters select[name=review]", "edited")
    page.wait_for_function("() => document.querySelectorAll('tr.completion-row').length === 1")
    assert "review=edited" in page.url
    page.click(f"tr[data-completion='{edited.pk}'] a")
    page.wait_for_url(f"**/completions/{edited.pk}/")
    assert "6 edited" in page.inner_text("#completion-review")
    assert "2 / 2" in page.inner_text("#completion-topk")
    # Keyset paging, four at a time: "Load more" appends the next page in place.
    page.goto(f"/projects/{project.pk}/completions/?limit=4")
    assert page.locator("tr.completion-row").count() == 4
    page.click("#load-more a")
    page.wait_for_function("() => document.querySelectorAll('tr.completion-row').length === 8")
    page.click("#load-more a")
    page.wait_for_function("() => document.querySelectorAll('tr.completion-row').length === 9")
    assert page.locator("#load-more").count() == 0
    ids = [
        int(x)
        for x in page.locator("tr.completion-row").evaluate_all(
            "rows => rows.map(r => r.dataset.completion)"
        )
    ]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 9
