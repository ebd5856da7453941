"""Kill a real Celery worker with SIGKILL in the middle of a dataset build; a worker restarted at
once takes the build over through the run lifecycle (beat's sweep re-sends the stale run), and
the version ends succeeded with complete files whose content hash equals a clean build's.
Nothing partial is downloadable at any point before that.

PostgreSQL and Redis only (worker, beat and test share the broker and the test database); the
build is made long enough by its real size (rows seeded with INSERT … SELECT), not by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.db import connection

from distillapp.datasets.build import dataset_version_execute
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.services import dataset_create, dataset_version_build, version_folder
from distillapp.datasets.writer import file_sha256
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

PROMPTS = 150_000  # two approved samples each: 300k rows, a build of several seconds


def _worker(name: str, log: Path, media: Path) -> subprocess.Popen:
    return start_worker(name, log, queues="default", DISTILLERY_MEDIA_ROOT=str(media))


def _seed(project, user) -> None:
    prompt_set = PromptSetFactory(project=project)
    job = GenerationJobFactory(project=project, prompt_set=prompt_set, samples_per_prompt=2)
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
            """INSERT INTO generation_completion (job_id, prompt_id, sample_index, status, text,
                   finish_reason, prompt_tokens, completion_tokens, latency_ms, cost_usd, error,
                   attempts, created_at)
               SELECT %s, p.id, s, 'ok', 'Answer ' || p.position || '/' || s || ' '
                   || md5(p.id::text), 'stop', 1, 1, 1, 0, '', 1, now()
               FROM prompts_prompt p CROSS JOIN generate_series(0, 1) s
               WHERE p.prompt_set_id = %s""",
            [job.pk, prompt_set.pk],
        )
        cur.execute(
            """INSERT INTO review_reviewitem (completion_id, project_id, job_id, prompt_id, state,
                   priority, reviews_count, decision, created_at)
               SELECT c.id, %s, c.job_id, c.prompt_id, 'done', 0, 1, 'approve', now()
               FROM generation_completion c WHERE c.job_id = %s""",
            [project.pk, job.pk],
        )
        cur.execute("ANALYZE")


def test_a_build_killed_mid_way_is_rebuilt_whole_by_a_restarted_worker(
    project, alice, tmp_path, settings
) -> None:
    from workers.app import app

    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("default")
    _seed(project, alice)
    dataset = dataset_create(project=project, name="big", user=alice)
    procs: list[subprocess.Popen] = []
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    seen_states: set[str] = set()

    def check_nothing_partial() -> DatasetVersion:
        v = DatasetVersion.objects.get(pk=version.pk)
        seen_states.add(v.status)
        if v.status != "succeeded":
            # Nothing downloadable, and the final folder never appears without success... except
            # for the moment between rename and the success record, which no download can see.
            assert not v.files and not v.sha256
        return v

    try:
        procs.append(start_beat(tmp_path, DISTILLERY_MEDIA_ROOT=str(media)))
        procs.append(first := _worker("dskill1", log1, media))
        version = dataset_version_build(dataset=dataset, recipe={}, user=alice)
        deadline = time.monotonic() + 120
        while True:
            v = check_nothing_partial()
            if v.status == "running" and v.done > 0:
                break
            assert time.monotonic() < deadline, log1.read_text()[-4000:]
            assert v.status in ("queued", "running"), (v.status, v.message)
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed = DatasetVersion.objects.get(pk=version.pk)
        assert killed.status == "running" and 0 < killed.done < killed.total, (
            killed.status,
            killed.done,
        )
        leftovers = list(version_folder(killed).parent.glob(".*.tmp-*"))
        assert leftovers, "the killed build left its temporary folder (then removed on takeover)"
        procs.append(_worker("dskill2", log2, media))  # restarted at once
        deadline = time.monotonic() + 300
        while (v := check_nothing_partial()).status != "succeeded":
            assert v.status in ("running", "queued"), (v.status, v.message)
            assert time.monotonic() < deadline, log2.read_text()[-4000:]
            time.sleep(0.1)
    finally:
        for proc in procs:
            stop(proc)
        forget_unacked_messages()

    built = DatasetVersion.objects.get(pk=version.pk)
    assert built.counts["rows"] == 2 * PROMPTS
    folder = version_folder(built)
    assert not list(folder.parent.glob(".*.tmp-*"))
    for name, meta in built.files.items():
        assert file_sha256(folder / name) == meta["sha256"], name
    assert "build_dataset_version" in log2.read_text()
    # A clean build of the same recipe over the same data gives the same content hash.
    clean = dataset_version_build(
        dataset=dataset_create(project=project, name="clean", user=alice), recipe={}, user=alice
    )
    DatasetVersion.objects.filter(pk=clean.pk).update(status="queued")
    clean_built = dataset_version_execute(version_id=clean.pk)
    assert clean_built is not None and clean_built.sha256 == built.sha256
    assert (version_folder(clean_built) / "train.jsonl").read_bytes() == (
        folder / "train.jsonl"
    ).read_bytes()
