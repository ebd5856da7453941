"""Kill a real Celery worker with SIGKILL in the middle of a filter run; a worker restarted at once
takes the run over (beat's sweep re-sends the stale run). It starts afresh in a scratch file of
its own, removes the one the killed worker left, and ends with the counts and verdicts of a clean
run: nothing counted twice, no duplicate missed.

PostgreSQL and Redis only (worker, beat and test share the broker and the test database); the run
is made long enough by its real size (rows seeded with INSERT … SELECT), not by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from django.db import connection

from distillapp.filters.models import CompletionVerdict, FilterRun
from distillapp.filters.services import filter_run_execute, filter_run_start
from distillapp.filters.services.run_scratch import scratch_dir
from tests.factories import GenerationJobFactory, PromptSetFactory
from tests.processes import (
    forget_unacked_messages,
    needs_real_broker_and_database,
    start_beat,
    start_worker,
    stop,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    needs_real_broker_and_database,
]

PROMPTS = 15_000  # two samples each: 30k completions, a run of several seconds


def _seed(project) -> None:
    """Two samples per prompt, ~100-character answers; every 50th a copy of an answer 7 before
    (another prompt), the next a near copy of one 9 before."""
    prompt_set = PromptSetFactory(project=project)
    job = GenerationJobFactory(project=project, prompt_set=prompt_set, samples_per_prompt=2)
    body = "'Answer ' || k || ': ' || md5(k::text) || ' ' || md5((k * 2)::text) || ' ' || md5((k * 3)::text)"
    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO prompts_prompt (project_id, prompt_set_id, position, external_id,
                   messages, text, reference, metadata, split, text_hash)
               SELECT %s, %s, g, '', NULL, 'Question ' || g, NULL, '{}'::jsonb, 'train',
                   md5('k' || g)::uuid
               FROM generate_series(1, %s) g""",
            [project.pk, prompt_set.pk, PROMPTS],
        )
        cur.execute(
            f"""INSERT INTO generation_completion (job_id, prompt_id, sample_index, status, text,
                   finish_reason, prompt_tokens, completion_tokens, latency_ms, cost_usd, error,
                   attempts, created_at)
               SELECT %s, c.prompt_id, c.s, 'ok', {body}
                   || CASE WHEN mod(c.g, 50) = 1 THEN ' (revised once)' ELSE '' END,
                   'stop', 1, 1, 1, 0, '', 1, now()
               FROM (SELECT p.id AS prompt_id, s, 2 * p.position + s AS g,
                        CASE WHEN mod(2 * p.position + s, 50) = 0 THEN 2 * p.position + s - 7
                             WHEN mod(2 * p.position + s, 50) = 1 THEN 2 * p.position + s - 9
                             ELSE 2 * p.position + s END AS k
                     FROM prompts_prompt p CROSS JOIN generate_series(0, 1) s
                     WHERE p.prompt_set_id = %s) c""",
            [job.pk, prompt_set.pk],
        )
        cur.execute("ANALYZE")


def _snapshot(project) -> list[tuple]:
    return sorted(
        CompletionVerdict.objects.filter(project=project).values_list(
            "completion_id", "state", "flags", "duplicate_of_id"
        )
    )


def test_a_run_killed_mid_way_is_taken_over_and_counts_nothing_twice(project, alice, tmp_path):
    from workers.app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    _seed(project)
    procs: list[subprocess.Popen] = []
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    folder = scratch_dir()
    try:
        procs.append(start_beat(tmp_path))
        procs.append(first := start_worker("fkill1", log1, queues="default"))
        run = filter_run_start(project=project, user=alice)
        deadline = time.monotonic() + 120
        while True:
            r = FilterRun.objects.get(pk=run.pk)
            if r.status == "running" and 0 < r.done < r.total:
                break
            assert time.monotonic() < deadline, log1.read_text()[-4000:]
            assert r.status in ("queued", "running"), (r.status, r.message)
            time.sleep(0.02)
        leftover = folder / f"filter-run-{run.pk}-{r.claim_token}.sqlite3"
        assert leftover.exists(), "the worker keeps its state in the scratch file"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert leftover.exists(), "a killed worker cannot delete its file"
        procs.append(start_worker("fkill2", log2, queues="default"))  # restarted at once
        deadline = time.monotonic() + 300
        while (r := FilterRun.objects.get(pk=run.pk)).status != "succeeded":
            assert r.status in ("running", "queued"), (r.status, r.message)
            assert time.monotonic() < deadline, log2.read_text()[-4000:]
            time.sleep(0.1)
    finally:
        for proc in procs:
            stop(proc)
        forget_unacked_messages()

    assert "execute_filter_run" in log2.read_text()
    assert not leftover.exists()
    assert not list(folder.glob(f"filter-run-{run.pk}-*"))
    taken_over, verdicts = r.counts, _snapshot(project)
    assert taken_over["total"] == len(verdicts) == 2 * PROMPTS
    # 600 planted copies of each kind (LSH may miss the odd near copy; the clean run then too).
    assert taken_over["by_flag"]["exact_duplicate"] == 600
    assert 590 <= taken_over["by_flag"]["near_duplicate"] <= 600
    # A clean run over the same completions agrees, verdict for verdict.
    clean = filter_run_execute(run_id=FilterRun.objects.create(project=project).pk)
    assert clean is not None and clean.counts == taken_over
    assert _snapshot(project) == verdicts
