"""Duplicates and a prompt's samples, and the streaming pipeline that finds them over the whole
project (batches of completions, state in the run's scratch database, texts fetched again only
for candidates). The store itself: test_dedup_store.py."""

from __future__ import annotations

import random

import pytest

from distillapp.filters import dedup, dedup_store
from distillapp.filters.models import CompletionVerdict, FilterRun, VerdictState
from distillapp.filters.services import filter_config_update, pipeline, verdict_rows
from tests.factories import CompletionFactory, GenerationJobFactory, PromptFactory, TeacherFactory
from tests.filters.conftest import filter_job
from tests.filters.texts import BASE, CLOSE, CLOSER


@pytest.fixture
def job(project):
    return GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))


def _samples(job, *texts, finish_reasons=None):
    """Completions of one prompt: sample 0, 1, … with these texts."""
    prompt = PromptFactory(prompt_set=job.prompt_set)
    finish_reasons = finish_reasons or ["stop"] * len(texts)
    return [
        CompletionFactory(job=job, prompt=prompt, text=t, sample_index=i, finish_reason=f)
        for i, (t, f) in enumerate(zip(texts, finish_reasons, strict=True))
    ]


def _v(completion):
    return CompletionVerdict.objects.get(completion=completion)


@pytest.mark.django_db
def test_by_default_two_samples_of_one_prompt_are_never_near_duplicates(job):
    first, second = _samples(job, BASE, CLOSE)
    [other_prompt] = _samples(job, CLOSER)
    filter_job(job)
    # Both samples stay for best-of-n picking; another prompt's copy of them is flagged.
    assert _v(first).state == _v(second).state == VerdictState.PASSED
    assert _v(other_prompt).flags == ["near_duplicate"]
    assert _v(other_prompt).duplicate_of_id == first.pk


@pytest.mark.django_db
def test_the_within_prompt_setting_also_compares_a_prompts_own_samples(job, project):
    filter_config_update(project=project, data={"dedup_within_prompt": True})
    first, second = _samples(job, BASE, CLOSE)
    filter_job(job)
    assert _v(first).state == VerdictState.PASSED
    assert _v(second).flags == ["near_duplicate"] and _v(second).duplicate_of_id == first.pk
    assert "Jaccard" in _v(second).reasons["near_duplicate"]


@pytest.mark.django_db
def test_best_of_samples_keeps_the_sample_that_passed_the_other_filters(job, project):
    filter_config_update(project=project, data={"dedup_within_prompt": True})
    cut, clean = _samples(job, BASE, CLOSE, finish_reasons=["length", "stop"])
    filter_job(job)
    assert _v(clean).state == VerdictState.PASSED
    assert _v(cut).flags == ["truncated", "near_duplicate"]
    assert _v(cut).duplicate_of_id == clean.pk


@pytest.mark.django_db
def test_across_prompts_the_kept_prompts_samples_all_stay(job):
    """A(p1) ~ B(p2) ~ C(p1): A is kept, so B is its duplicate, and A's own sample C stays."""
    a, c = _samples(job, BASE, CLOSE)
    [b] = _samples(job, CLOSER)
    filter_job(job)
    assert _v(a).state == _v(c).state == VerdictState.PASSED
    assert _v(b).flags == ["near_duplicate"] and _v(b).duplicate_of_id == a.pk


@pytest.mark.django_db
def test_identical_samples_of_one_prompt_are_still_exact_duplicates(job):
    first, second = _samples(job, BASE, BASE)
    filter_job(job)
    assert _v(first).state == VerdictState.PASSED
    assert _v(second).flags == ["exact_duplicate"] and _v(second).duplicate_of_id == first.pk


def test_the_within_prompt_setting_is_validated(project):
    from django.core.exceptions import ValidationError

    assert filter_config_update(project=project, data={"dedup_within_prompt": "on"})
    assert project.settings["filters"]["dedup_within_prompt"] is True
    with pytest.raises(ValidationError) as exc:
        filter_config_update(project=project, data={"dedup_within_prompt": "maybe"})
    assert "dedup_within_prompt" in exc.value.message_dict


# ---- streaming ---------------------------------------------------------------------------------


def _mixed_texts(n: int) -> list[str]:
    rng = random.Random(3)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "kappa",
        "sigma",
        "omega",
        "zeta",
        "theta",
        "lambda",
        "river",
        "stone",
    ]
    texts = []
    for i in range(n):
        if i % 5 == 4:
            texts.append(texts[i - 3])  # exact copy
        elif i % 5 == 3:
            texts.append(texts[i - 1].replace(texts[i - 1].split()[3], "CHANGED"))  # near
        elif i % 7 == 6:
            texts.append("I'm sorry, but I can't help with that request, truly.")
        else:
            texts.append(" ".join(f"{rng.choice(words)}{rng.randint(0, 99)}" for _ in range(30)))
    return texts


def _snapshot(project):
    return sorted(
        CompletionVerdict.objects.filter(project=project).values_list(
            "completion_id", "state", "flags", "duplicate_of_id", "reasons"
        )
    )


@pytest.mark.django_db
def test_small_batches_give_the_same_verdicts_as_one_batch(job, project, monkeypatch):
    """The pipeline reads `_BATCH` completions at a time, the store sorts its keys a partition
    at a time and checks candidate pairs with texts fetched a few at a time; the verdicts must
    not depend on any of these sizes."""
    completions = [_samples(job, t)[0] for t in _mixed_texts(40)]
    filter_job(job)
    whole = _snapshot(project)
    assert {s for _, s, *_ in whole} == {"passed", "filtered"}
    flagged = {f for _, _, flags, *_ in whole for f in flags}
    assert {"exact_duplicate", "near_duplicate", "refusal"} <= flagged

    CompletionVerdict.objects.all().delete()
    sizes = []
    real_batches = pipeline._batches

    def small_batches(qs, fields, size=pipeline._BATCH):
        for rows in real_batches(qs, fields, size=3):
            sizes.append(len(rows))
            yield rows

    monkeypatch.setattr(pipeline, "_batches", small_batches)
    monkeypatch.setattr(pipeline, "_BATCH", 3)
    monkeypatch.setattr(verdict_rows, "SAVE_BATCH", 2)  # verdict upserts in chunks too
    monkeypatch.setattr(dedup_store, "_VERIFY_TEXTS", 2)
    monkeypatch.setattr(dedup_store, "_CHUNK", 2)  # pages of pairs, ids per lookup
    monkeypatch.setattr(dedup_store, "PART_ENTRIES", 7)  # many partitions
    filter_job(job)
    assert max(sizes) == 3 and sum(sizes) == len(completions)
    assert _snapshot(project) == whole
    run = FilterRun.objects.filter(job=job).first()
    assert run.counts["total"] == 40 and run.counts["filtered"] == sum(
        1 for _, s, *_ in whole if s == "filtered"
    )


@pytest.mark.django_db
def test_a_job_run_compares_with_the_rest_of_the_project_in_batches(job, project, monkeypatch):
    monkeypatch.setattr(pipeline, "_BATCH", 2)
    earlier = [_samples(job, t)[0] for t in (BASE, "Another answer entirely, about rivers.")]
    filter_job(job)
    job2 = GenerationJobFactory(project=project, teacher=job.teacher, prompt_set=job.prompt_set)
    later = [_samples(job2, t)[0] for t in (CLOSE, BASE, "Something new about stones.")]
    filter_job(job2)
    assert _v(earlier[0]).state == VerdictState.PASSED
    assert (
        _v(later[0]).flags == ["near_duplicate"] and _v(later[0]).duplicate_of_id == earlier[0].pk
    )
    assert (
        _v(later[1]).flags == ["exact_duplicate"] and _v(later[1]).duplicate_of_id == earlier[0].pk
    )
    assert _v(later[2]).state == VerdictState.PASSED


def test_near_duplicate_groups_can_keep_texts_of_one_key_apart():
    assert dedup.near_duplicate_groups([BASE, CLOSE], threshold=0.8) == [[0, 1]]
    assert dedup.near_duplicate_groups([BASE, CLOSE], threshold=0.8, apart=[7, 7]) == []
    assert dedup.near_duplicate_groups([BASE, CLOSE], threshold=0.8, apart=[7, 8]) == [[0, 1]]
