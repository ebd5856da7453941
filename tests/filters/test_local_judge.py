"""A local (`hf_local`) teacher as the LLM judge: runs go to a gpu worker, the model judges in
batches, and its replies become scores or per-item errors like an API judge's."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distillapp.filters.models import CompletionVerdict
from distillapp.filters.services import filter_config_update, filter_run_start, filters_queue
from tests.factories import CompletionFactory, GenerationJobFactory, PromptFactory, TeacherFactory
from tests.generation.tiny_model import build_tiny_model
from workers.engine import generate_local
from workers.tasks.filters import execute_filter_run, run_job_filters

pytestmark = pytest.mark.django_db

ANSWER = "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen."


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-judge")))


def _local_judge(project, model_path: str):
    teacher = TeacherFactory(
        project=project, name="Local judge", kind="hf_local", model_path=model_path, device="cpu"
    )
    filter_config_update(
        project=project,
        data={"enabled": ["empty", "judge"], "judge_teacher_id": teacher.pk, "judge_threshold": 6},
    )
    return teacher


def _completions(project, n: int):
    job = GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))
    return job, [
        CompletionFactory(job=job, prompt=PromptFactory(prompt_set=job.prompt_set), text=ANSWER)
        for _ in range(n)
    ]


def test_runs_with_a_local_judge_go_to_a_gpu_worker(project, monkeypatch):
    assert filters_queue(project) == "default"
    _local_judge(project, "/models/judge")
    assert filters_queue(project) == "gpu"
    sent = []
    monkeypatch.setattr(
        execute_filter_run,
        "apply_async_on_commit",
        lambda args, **options: sent.append((args, options)),
    )
    run = filter_run_start(project=project, user=None)
    assert sent == [((run.pk,), {"queue": "gpu"})]


@dataclass
class _Reply:
    key: int
    text: str


def test_local_replies_become_scores_and_unreadable_ones_errors(project, monkeypatch):
    """The model's replies are fixed here so the mapping back to completions is checked."""
    _local_judge(project, "/models/judge")
    job, (good, bad, unreadable) = _completions(project, 3)
    replies = {
        good.pk: '{"score": 9, "rationale": "Accurate."}',
        bad.pk: "Score: 3 - it misses the point.",
        unreadable.pk: "I like turtles.",
    }
    seen_batches = []

    def fake_generate_all(lm, requests, settings, *, batch_size, on_batch, **_):
        requests = list(requests)
        assert settings.temperature == 0.0
        assert all("Rubric" in r.messages[-1]["content"] for r in requests)
        seen_batches.append(len(requests))
        on_batch([_Reply(r.key, replies[r.key]) for r in requests])
        return []

    monkeypatch.setattr(generate_local, "load", lambda path, **_: object())
    monkeypatch.setattr(generate_local, "generate_all", fake_generate_all)
    run_job_filters.run(job.pk)

    verdicts = {v.completion_id: v for v in CompletionVerdict.objects.all()}
    assert seen_batches == [3]
    assert (verdicts[good.pk].judge_score, verdicts[good.pk].judge_rationale) == (9, "Accurate.")
    assert verdicts[bad.pk].judge_score == 3 and verdicts[bad.pk].flags == ["judge"]
    assert verdicts[unreadable.pk].judge_score is None
    assert verdicts[unreadable.pk].reasons["judge"].startswith("The judge failed")


def test_a_real_tiny_model_judges_every_completion(project, tiny_model_dir):
    """End to end on a real transformers model: it cannot grade, but every completion must come
    back judged, with a score or with the reason it has none."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _local_judge(project, tiny_model_dir)
        job, completions = _completions(project, 3)
        run_job_filters.run(job.pk)
    finally:
        torch.set_num_threads(threads)
    for completion in completions:
        verdict = CompletionVerdict.objects.get(completion=completion)
        # A failure must come from reading the model's own reply, not from a call that never
        # reached the model (an API client would fail with a connection error instead).
        reason = verdict.reasons.get("judge", "")
        assert verdict.judge_score is not None or (
            "No score from 1 to 10" in reason or "empty reply" in reason
        ), reason
