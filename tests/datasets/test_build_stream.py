"""The PostgreSQL COPY stream (`pgstream`) against the reference path (`selectors.dataset_rows`):
the same version, file for file, for every recipe, on data made to trip a column-wise reading up
(odd prompt messages, escapes, blank and duplicate targets, edits, NaN scores, empty top-k records),
with batches so small that prompts run across them.

PostgreSQL only, and committed data: the stream reads on a connection of its own.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db import connection

from distillapp.datasets import build, pgstream, services
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.services import version_folder
from distillapp.filters.models import CompletionVerdict
from distillapp.prompts.models import Split
from distillapp.prompts.selectors import HeldOutPromptError
from distillapp.review.models import BestPick, BulkAction, Review, ReviewItem
from tests.conftest import USING_POSTGRES
from tests.datasets.conftest import topk_blob
from tests.factories import (
    CompletionFactory,
    GenerationJobFactory,
    PromptFactory,
    PromptSetFactory,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not USING_POSTGRES, reason="the COPY stream is PostgreSQL's"),
]

ODD = 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é 😀 \u2028 }, {'
MESSAGES = [
    [{"role": "system", "content": ODD}, {"role": "user", "content": "plain"}],
    [{"role": "user", "content": 'a"}, {"role": "x'}],
    [{"role": "user", "content": "x", "name": "bob"}],  # an extra key
    [{"role": "user", "content": 5}],  # not a string
    [{"role": "user", "content": None}, {"role": "assistant", "content": {"a": [1]}}],
    [{"role": "", "content": "empty role"}, {"content": "no role"}, {"role": 7, "content": "n"}],
    [1, "two", {"role": "user", "content": "after junk"}],
    [],
    {"role": "user", "content": "not a list"},
    "just a string",
    None,  # SQL NULL: the prompt's text
    [{"role": "user", "content": ""}],
]
TEXTS = [
    "<think>why</think>  4",
    "<think>why</think>  4",  # the same target again: pair dedupe
    ODD,
    "  \n\t ",  # blank
    "\u3000",  # blank, and no ASCII at all
    "é",
    "4",
    "<think>a</think>\n4\n",
]


@pytest.fixture
def tricky(project, alice):
    prompt_set = PromptSetFactory(project=project)
    jobs = [
        GenerationJobFactory(project=project, prompt_set=prompt_set, samples_per_prompt=3)
        for _ in range(2)
    ]
    bulk = BulkAction.objects.create(project=project, actor=alice, decision="approve")
    prompts = []
    for i, messages in enumerate(MESSAGES):
        prompt = PromptFactory(
            prompt_set=prompt_set,
            text=f"Prompt {i} {ODD}",
            reference=[" 4 ", None, "", "é"][i % 4],
        )
        prompt.messages = messages
        prompt.save(update_fields=["messages"])
        prompts.append(prompt)
    heldout = PromptFactory(prompt_set=prompt_set, text="held out", split=Split.HELDOUT)
    blobs = [topk_blob(2), topk_blob(3, strings=True), b"", None]
    k = 0
    for p, prompt in enumerate([*prompts, heldout]):
        for j, job in enumerate(jobs):
            for s in range(3):
                k += 1
                text = TEXTS[(p + s // 2) % len(TEXTS)]  # samples 0 and 1 alike
                c = CompletionFactory(job=job, prompt=prompt, sample_index=s, text=text)
                c.topk = blobs[k % len(blobs)]
                c.save(update_fields=["topk"])
                score = [7.0, None, float("nan"), 9.5, 3.0][k % 5]
                CompletionVerdict.objects.create(
                    completion=c,
                    project=project,
                    state=["passed", "restored", "filtered", "passed"][k % 4],
                    judge_score=score,
                )
                if k % 7 == 6:
                    continue  # no review item: unreviewed when the filters passed it
                state = ["done", "done", "done", "open", "done", "leased"][k % 6]
                edits = [None, text, "<think>x</think>" + text, "edited\n", None]
                ReviewItem.objects.create(
                    completion=c,
                    project=project,
                    job=job,
                    prompt=prompt,
                    state=state,
                    decision=["approve", "approve", "reject"][k % 3] if state == "done" else None,
                    reviews_count=k % 2,
                    target_text=edits[k % 5] if state == "done" else None,
                    adjudicated_by=alice if k % 5 == 4 else None,
                    bulk_action=bulk if k % 4 == 2 else None,
                )
                Review.objects.create(
                    completion=c, project=project, reviewer=alice, decision="approve"
                )
                if p % 3 == 0 and s == 2 and j == 0:
                    BestPick.objects.create(project=project, job=job, prompt=prompt, completion=c)
    return {"jobs": jobs, "prompts": prompts, "heldout": heldout}


def _build(project, user, recipe, *, stream, monkeypatch, batch_rows=4):
    monkeypatch.setattr(build, "BATCH_ROWS", batch_rows)
    monkeypatch.setattr(pgstream, "usable", lambda: stream)
    used = []
    real = pgstream.RowBatches

    class Spy(real):
        def __init__(self, **kwargs):
            used.append(True)
            super().__init__(**kwargs)

    monkeypatch.setattr(pgstream, "RowBatches", Spy)
    dataset = services.dataset_create(
        project=project,
        name=f"{'stream' if stream else 'rows'} {batch_rows} {json.dumps(recipe)}",
        user=user,
    )
    version = services.dataset_version_build(dataset=dataset, recipe=recipe, user=user)
    built = build.dataset_version_execute(version_id=version.pk)
    monkeypatch.undo()
    assert built is not None and built.status == "succeeded", built and built.message
    assert bool(used) == stream
    return built


def _contents(version: DatasetVersion) -> dict:
    folder = version_folder(version)
    out = {
        name: (folder / name).read_bytes()
        for name in (
            "train.jsonl",
            "validation.jsonl",
            "train_kd.jsonl",
            "validation_kd.jsonl",
            "topk.bin",
        )
    }
    out["rows"] = [
        {k: "NaN" if isinstance(v, float) and v != v else v for k, v in row.items()}
        for row in pq.read_table(folder / "rows.parquet").to_pylist()
    ]
    lineage = dict(version.lineage)
    lineage.pop("built_at")
    out["version"] = (version.sha256, version.counts, lineage, version.diff)
    with zipfile.ZipFile(folder / "hf.zip") as zf:
        out["hf"] = {
            n: pa.ipc.open_stream(zf.read(n)).read_all().to_pylist()
            if n.endswith(".arrow")
            else zf.read(n)
            for n in zf.namelist()
            if not n.endswith("README.md")
        }
    return out


RECIPES = [
    {},
    {"include_unreviewed": True},
    {"reasoning": "strip", "include_unreviewed": True},
    {"reasoning": "match_reference", "include_unreviewed": True},
    {"per_prompt": "one", "include_unreviewed": True},
    {"dedupe": "target", "validation_fraction": 0.5, "seed": 3, "include_unreviewed": True},
    {"min_judge_score": 5},
]


@pytest.mark.parametrize("recipe", RECIPES, ids=[json.dumps(r) for r in RECIPES])
def test_the_stream_builds_what_the_reference_rows_build(
    project, alice, tricky, media, monkeypatch, recipe
):
    rows = _build(project, alice, recipe, stream=False, monkeypatch=monkeypatch)
    stream = _build(project, alice, recipe, stream=True, monkeypatch=monkeypatch)
    assert stream.counts["rows"] > 0 and stream.counts["dropped"]
    if recipe == {"include_unreviewed": True}:  # the data covers every source and a KD row
        assert set(stream.counts["sources"]) == set(pgstream.SOURCES)
        assert stream.counts["kd_rows"] > 0
    expected, got = _contents(rows), _contents(stream)
    assert got.keys() == expected.keys()
    for name in expected:
        if name == "version":
            sha, counts, lineage, diff = got[name]
            assert (sha, counts, lineage) == expected[name][:3]
            for kind in ("added", "changed", "removed", "unchanged"):
                assert diff[kind] == expected[name][3][kind]
        elif name == "hf":
            # The same files; state.json's fingerprint is whatever `datasets` made up.
            assert got[name].keys() == expected[name].keys()
            for entry in got[name]:
                if not entry.endswith("state.json"):
                    assert got[name][entry] == expected[name][entry], entry
        else:
            assert got[name] == expected[name], name


@pytest.mark.parametrize("recipe", RECIPES, ids=[json.dumps(r) for r in RECIPES])
def test_the_preview_reads_the_stream_and_counts_what_the_build_writes(
    project, alice, tricky, media, monkeypatch, recipe
):
    from distillapp.datasets.recipe import recipe_parse
    from distillapp.datasets.selectors import recipe_preview

    parsed = recipe_parse(recipe)
    monkeypatch.setattr(pgstream, "usable", lambda: False)
    by_rows = recipe_preview(project=project, recipe=parsed)
    monkeypatch.setattr(pgstream, "usable", lambda: True)
    by_stream = recipe_preview(project=project, recipe=parsed)
    monkeypatch.undo()
    assert by_stream == by_rows and by_stream["rows"] > 0
    built = _build(project, alice, recipe, stream=True, monkeypatch=monkeypatch)
    for key in ("rows", "train", "validation", "prompts", "teacher_exact", "topk_rows"):
        assert by_stream[key] == built.counts[key], key
    assert by_stream["sources"] == built.counts["sources"]
    assert by_stream["dropped"] == built.counts["dropped"]


def test_batches_in_one_large_run_match_many_small_ones(project, alice, tricky, media, monkeypatch):
    small = _build(project, alice, {}, stream=True, monkeypatch=monkeypatch, batch_rows=1)
    large = _build(project, alice, {}, stream=True, monkeypatch=monkeypatch, batch_rows=50_000)
    assert _contents(small)["rows"] == _contents(large)["rows"]
    assert small.sha256 == large.sha256 and small.counts == large.counts
    # and the second version of a dataset diffs against the first, batch by batch
    again = services.dataset_version_build(dataset=small.dataset, recipe={}, user=alice)
    monkeypatch.setattr(build, "BATCH_ROWS", 3)
    again = build.dataset_version_execute(version_id=again.pk)
    assert again.diff["unchanged"] == small.counts["rows"]
    assert again.diff["added"] == again.diff["removed"] == again.diff["changed"] == 0


def test_a_failing_query_fails_the_build_and_leaves_nothing(
    project, alice, tricky, media, monkeypatch
):
    real = pgstream.copy_sql

    def broken(**kwargs):
        sql, params = real(**kwargs)
        return sql.replace("ORDER BY", "ORDER BY no_such_column,", 1), params

    monkeypatch.setattr(pgstream, "copy_sql", broken)
    dataset = services.dataset_create(project=project, name="broken", user=alice)
    version = services.dataset_version_build(dataset=dataset, recipe={}, user=alice)
    with pytest.raises(Exception, match="no_such_column"):
        build.dataset_version_execute(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == "failed" and "no_such_column" in version.message
    assert not version_folder(version).exists()
    assert not list(version_folder(version).parent.glob(".*tmp-*"))


def test_held_out_ids_are_found_in_dense_and_sparse_batches(project, tricky):
    heldout = tricky["heldout"].pk
    train = [p.pk for p in tricky["prompts"]]
    build._ensure_trainable(np.array(train))
    with pytest.raises(HeldOutPromptError):
        build._ensure_trainable(np.array([*train, heldout]))  # a dense range
    with pytest.raises(HeldOutPromptError):
        build._ensure_trainable(np.array([heldout, heldout + 10**9]))  # sparse: by id
    assert connection.vendor == "postgresql"
