"""Search indexing of an imported prompt set, as a background run (distillapp.core.runs)."""

from __future__ import annotations

from collections.abc import Callable

from django.db import DatabaseError, connection, transaction
from django.db.models import F, Max, Min

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    RunCancelled,
    run_claim,
    run_end,
    run_enqueue,
    run_fail,
    run_progress,
)
from distillapp.prompts.models import Prompt, PromptSet, SearchIndexRun

SEARCH_INDEX_BATCH = 20_000  # prompt ids per UPDATE of the deferred search indexing


def search_index_start(*, prompt_set: PromptSet) -> SearchIndexRun:
    """Queue the indexing of a set just imported (its task is sent when the import commits)."""
    run = SearchIndexRun.objects.create(
        prompt_set=prompt_set, total=prompt_set.total_count, message="Waiting for a worker."
    )
    run_enqueue(run)
    return run


def search_index_run_execute(*, run_id: int) -> SearchIndexRun | None:
    """Claim and run (or take over) a search-indexing run. Idempotent: a second delivery gets no
    claim; each batch only touches prompts still without a vector."""
    claim = run_claim(SearchIndexRun, pk=run_id)
    if claim.state != ClaimState.CLAIMED or claim.run is None:
        return None
    run, token = claim.run, claim.token
    prompt_set = PromptSet.objects.get(pk=run.prompt_set_id)
    start_count = prompt_set.search_indexed_count

    def beat(indexed: int) -> None:
        run_progress(
            SearchIndexRun,
            pk=run_id,
            token=token,
            done=start_count + indexed,
            message=f"Indexed {start_count + indexed:,} of {run.total:,} prompts.",
        )

    try:
        prompt_set_index_search(prompt_set=prompt_set, beat=beat)
    except ClaimLost:
        return None
    except RunCancelled:
        run_end(SearchIndexRun, pk=run_id, token=token, status=RunStatus.CANCELLED)
    except Exception as exc:
        run_fail(SearchIndexRun, pk=run_id, token=token, message=f"{type(exc).__name__}: {exc}")
        raise
    else:
        run_end(
            SearchIndexRun,
            pk=run_id,
            token=token,
            status=RunStatus.SUCCEEDED,
            done=run.total,
            message="Search index ready.",
        )
    run.refresh_from_db()
    return run


def prompt_set_index_search(
    *,
    prompt_set: PromptSet,
    batch: int = SEARCH_INDEX_BATCH,
    beat: Callable[[int], None] | None = None,
) -> int:
    """Fill the search vectors of a set's prompts (PostgreSQL), then mark the set indexed.
    `beat(indexed so far)` runs after each batch (the run's heartbeat and progress).

    Idempotent and resumable: each batch is one short UPDATE of an id range that touches only
    prompts still without a vector, and the set's `search_indexed_count` grows as batches commit,
    so a re-delivered or concurrent run skips what is done. Returns how many prompts this call
    indexed. On other databases search needs no index: the set is just marked indexed.
    """
    if connection.vendor != "postgresql":
        PromptSet.objects.filter(pk=prompt_set.pk, search_indexed=False).update(
            search_indexed=True, search_indexed_count=F("total_count")
        )
        return 0
    bounds = Prompt.objects.filter(prompt_set_id=prompt_set.pk).aggregate(
        lo=Min("id"), hi=Max("id")
    )
    done = 0
    if bounds["lo"] is not None:
        start, hi = bounds["lo"], bounds["hi"]
        while start <= hi:
            end = min(start + batch - 1, hi)
            with transaction.atomic(), connection.cursor() as cursor:
                # New entries go to the GIN index's pending list and are merged in bulk, not one
                # posting at a time: ~30 % faster on the benchmark; the list is merged at the end.
                cursor.execute("SET LOCAL gin_pending_list_limit = '64MB'")
                cursor.execute(
                    "UPDATE prompts_prompt SET search_vector = to_tsvector('english'::regconfig, text)"
                    " WHERE prompt_set_id = %s AND id BETWEEN %s AND %s AND search_vector IS NULL",
                    [prompt_set.pk, start, end],
                )
                n = cursor.rowcount
                if n:
                    PromptSet.objects.filter(pk=prompt_set.pk).update(
                        search_indexed_count=F("search_indexed_count") + n
                    )
            done += n
            start = end + 1
            if beat is not None:
                beat(done)
    if done:
        _merge_search_pending_list()
    # Every prompt of the set lies within [lo, hi] and sets never gain prompts after their import.
    PromptSet.objects.filter(pk=prompt_set.pk).update(
        search_indexed=True, search_indexed_count=F("total_count")
    )
    return done


def _merge_search_pending_list() -> None:
    """Merge the search index's pending list into the index, so searches need not scan up to
    64 MB of pending entries until autovacuum gets to it. Needs to own the index; when the
    database role does not, autovacuum does it later."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT gin_clean_pending_list('prompt_search_vector_gin'::regclass)")
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
