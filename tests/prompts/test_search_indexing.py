"""Deferred full-text indexing: imports skip it, a task fills it, searches never miss a prompt."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import ClaimLost, run_claim, run_heartbeat
from distillapp.prompts.models import Prompt, PromptSet, SearchIndexRun
from distillapp.prompts.selectors import prompt_set_prompts, prompts_for_generation
from distillapp.prompts.services import prompt_set_import, prompt_set_index_search
from tests.conftest import USING_POSTGRES
from tests.prompts.conftest import jsonl, upload
from workers.tasks.prompts import index_prompt_set_search

pytestmark = pytest.mark.django_db

RECORDS = [
    {"prompt": "How do I bake sourdough bread?"},
    {"prompt": "Baking bread without yeast", "split": "heldout"},
    {"prompt": "Explain Python decorators"},
] + [{"prompt": f"filler prompt number {i}"} for i in range(40)]


def _import(project, records=RECORDS):
    return prompt_set_import(
        project=project,
        file=upload("p.jsonl", jsonl(*records)),
        name="s",
        heldout_fraction=0,
        seed=1,
    ).prompt_set


def _texts(prompt_set, q):
    return {p.text for p in prompt_set_prompts(prompt_set=prompt_set, q=q, limit=200).items}


def _vectors_missing(prompt_set) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM prompts_prompt WHERE prompt_set_id = %s AND search_vector IS NULL",
            [prompt_set.pk],
        )
        return cursor.fetchone()[0]


def test_import_defers_indexing_to_a_task_on_postgres_and_needs_none_elsewhere(
    project, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        prompt_set = _import(project)
    prompt_set.refresh_from_db()
    if USING_POSTGRES:
        assert not prompt_set.search_indexed and prompt_set.search_indexed_count == 0
        assert _vectors_missing(prompt_set) == 43
        assert len(callbacks) == 1  # the indexing run's task, sent on commit
        run = prompt_set.search_index_run
        assert (run.status, run.total) == (RunStatus.QUEUED, 43)
    else:
        assert prompt_set.search_indexed and prompt_set.search_indexed_count == 43
        assert callbacks == [] and not SearchIndexRun.objects.exists()


def test_search_finds_every_match_before_during_and_after_indexing(project):
    prompt_set = _import(project)
    expected = {"How do I bake sourdough bread?", "Baking bread without yeast"}
    assert _texts(prompt_set, "bread") == expected  # nothing indexed yet
    if USING_POSTGRES:
        half = Prompt.objects.filter(prompt_set=prompt_set).order_by("id")[20].pk
        with connection.cursor() as cursor:  # a task stopped half-way
            cursor.execute(
                "UPDATE prompts_prompt SET search_vector = to_tsvector('english', text)"
                " WHERE prompt_set_id = %s AND id <= %s",
                [prompt_set.pk, half],
            )
        assert _texts(prompt_set, "bread") == expected
        assert _texts(prompt_set, "baking") == expected  # stemmed on both paths
    assert prompt_set_index_search(prompt_set=prompt_set, batch=7) == (22 if USING_POSTGRES else 0)
    prompt_set.refresh_from_db()
    assert prompt_set.search_indexed and prompt_set.search_indexed_count == 43
    if USING_POSTGRES:
        assert _vectors_missing(prompt_set) == 0
    assert _texts(prompt_set, "bread") == expected
    assert [p.text for p in prompts_for_generation(prompt_set=prompt_set, q="bread")] == [
        "How do I bake sourdough bread?"
    ]


@pytest.mark.skipif(not USING_POSTGRES, reason="only PostgreSQL defers indexing to a run")
def test_the_indexing_run_is_idempotent_and_ignores_deleted_runs(project):
    prompt_set = _import(project)
    run = prompt_set.search_index_run
    assert index_prompt_set_search(run.pk) == 43
    run.refresh_from_db()
    assert (run.status, run.done, run.claim_token) == (RunStatus.SUCCEEDED, 43, "")
    assert index_prompt_set_search(run.pk) is None  # a second delivery gets no claim
    assert prompt_set_index_search(prompt_set=prompt_set) == 0  # re-run: nothing left to do
    assert PromptSet.objects.get(pk=prompt_set.pk).search_indexed_count == 43
    assert index_prompt_set_search(10**9) is None


@pytest.mark.skipif(not USING_POSTGRES, reason="only PostgreSQL defers indexing to a run")
def test_an_indexing_run_whose_worker_died_is_taken_over_and_goes_on(project):
    prompt_set = _import(project)
    run = prompt_set.search_index_run
    dead = run_claim(SearchIndexRun, pk=run.pk)
    assert index_prompt_set_search(run.pk) is None  # the first worker's heartbeat is fresh
    SearchIndexRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    assert index_prompt_set_search(run.pk) == 43
    with pytest.raises(ClaimLost):
        run_heartbeat(SearchIndexRun, pk=run.pk, token=dead.token)


def test_generation_never_gets_held_out_prompts_before_indexing(project):
    prompt_set = _import(project)
    assert not prompts_for_generation(prompt_set=prompt_set, q="yeast").exists()  # held-out only
    stemmed = [p.text for p in prompts_for_generation(prompt_set=prompt_set, q="bread baking")]
    assert stemmed == (["How do I bake sourdough bread?"] if USING_POSTGRES else [])


def test_copy_keeps_tabs_newlines_backslashes_and_unicode_exactly(project):
    records = [
        {
            "prompt": "tab\there\nnew line\r\nback\\slash \\N café 🍞",
            "reference": "ref\\with\ttab\nand \\N",
            "note": "meta\\value\twith\ncontrols",
            "id": "id\\1",
        },
        {
            "messages": [
                {"role": "system", "content": "be\\terse\n"},
                {"role": "user", "content": "q\t"},
            ]
        },
        {"prompt": "big number", "n": 2**70},
    ]
    prompt_set = _import(project, records)
    first, chat, big = Prompt.objects.filter(prompt_set=prompt_set).order_by("position")
    assert first.text == records[0]["prompt"]
    assert first.messages is None
    assert first.chat == [{"role": "user", "content": records[0]["prompt"]}]
    assert first.reference == records[0]["reference"]
    assert first.metadata == {"note": records[0]["note"]}
    assert first.external_id == "id\\1"
    assert chat.messages == records[1]["messages"]
    assert big.text == "big number" and "n" in big.metadata  # orjson refuses; the fallback reads it


def test_the_set_page_shows_indexing_progress_until_done(project, alice_client):
    from django.urls import reverse

    prompt_set = _import(project)
    page = alice_client.get(reverse("prompt_set_detail", args=[prompt_set.pk])).content.decode()
    poll = reverse("prompt_set_search_index", args=[prompt_set.pk])
    api = alice_client.get(f"/api/v1/prompt-sets/{prompt_set.pk}").json()
    if USING_POSTGRES:
        assert f'hx-get="{poll}"' in page and "0 of 43 prompts" in page
        assert (api["search_indexed"], api["search_indexed_count"]) == (False, 0)
        index_prompt_set_search(prompt_set.search_index_run.pk)
    partial = alice_client.get(poll, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="search-index" hidden' in partial and "hx-get" not in partial
    api = alice_client.get(f"/api/v1/prompt-sets/{prompt_set.pk}").json()
    assert (api["search_indexed"], api["search_indexed_count"]) == (True, 43)


@pytest.mark.skipif(not USING_POSTGRES, reason="GIN pending lists are PostgreSQL's")
def test_indexing_merges_the_search_index_pending_list(project):
    from distillapp.prompts.services.search import _merge_search_pending_list

    prompt_set = _import(project)
    prompt_set_index_search(prompt_set=prompt_set)
    _merge_search_pending_list()  # raises unless the index exists and is ours to clean
    with connection.cursor() as cursor:
        cursor.execute("SELECT gin_clean_pending_list('prompt_search_vector_gin'::regclass)")
        assert cursor.fetchone()[0] == 0  # nothing left pending after the task's own merge
