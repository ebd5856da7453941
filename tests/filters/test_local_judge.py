"""A local (`hf_local`) teacher as the LLM judge: runs go to a gpu worker, the model judges in
batches, and its replies become scores or per-item errors like an API judge's."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from distillapp.core.paths import ModelPathRefused
from distillapp.filters.models import CompletionVerdict, FilterRun, RunStatus
from distillapp.filters.services import filter_config_update, filter_run_start, filters_queue
from tests.factories import CompletionFactory, GenerationJobFactory, PromptFactory, TeacherFactory
from tests.filters.conftest import filter_job
from tests.generation.tiny_model import build_tiny_model
from workers.engine import generate_local

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


def test_runs_with_a_local_judge_go_to_a_gpu_worker(project, sent_tasks):
    assert filters_queue(project) == "default"
    _local_judge(project, "/models/judge")
    assert filters_queue(project) == "gpu"
    run = filter_run_start(project=project, user=None)
    assert [(s.name, s.args, s.queue) for s in sent_tasks] == [
        ("workers.tasks.filters.execute_filter_run", (run.pk,), "gpu")
    ]


@dataclass
class _Reply:
    key: int
    text: str


def test_local_replies_become_scores_and_unreadable_ones_errors(project, monkeypatch, tmp_path):
    """The model's replies are fixed here so the mapping back to completions is checked."""
    _local_judge(project, str(tmp_path / "judge"))  # under a model root (tests' tmp folder)
    job, (good, bad, unreadable, echoed) = _completions(project, 4)
    replies = {
        good.pk: '{"score": 9, "rationale": "Accurate."}',
        bad.pk: '```json\n{"score": 3, "rationale": "It misses the point."}\n```',
        unreadable.pk: "Score: 3 - it misses the point.",
        # The rubric echoed back: its "1" must not become a score.
        echoed.pk: "Rubric: Score the assistant's answer from 1 (useless or wrong) to 10.",
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
    filter_job(job)

    verdicts = {v.completion_id: v for v in CompletionVerdict.objects.all()}
    assert seen_batches == [4]
    assert (verdicts[good.pk].judge_score, verdicts[good.pk].judge_rationale) == (9, "Accurate.")
    assert verdicts[bad.pk].judge_score == 3 and verdicts[bad.pk].flags == ["judge"]
    for pk in (unreadable.pk, echoed.pk):
        assert verdicts[pk].judge_score is None and verdicts[pk].state == "passed"
        assert verdicts[pk].reasons["judge"].startswith("The judge failed")
        assert verdicts[pk].judge_error and verdicts[pk].judge_reply == replies[pk]


def test_a_real_tiny_model_judges_every_completion(project, tiny_model_dir):
    """End to end on a real transformers model: it cannot grade, but every completion must come
    back judged, with a score or with the reason it has none."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _local_judge(project, tiny_model_dir)
        job, completions = _completions(project, 3)
        filter_job(job)
    finally:
        torch.set_num_threads(threads)
    for completion in completions:
        verdict = CompletionVerdict.objects.get(completion=completion)
        # A failure must come from reading the model's own reply, not from a call that never
        # reached the model (an API client would fail with a connection error instead).
        reason = verdict.reasons.get("judge", "")
        assert verdict.judge_score is not None or (
            "not the JSON object asked for" in reason
            or "no score from 1 to 10" in reason
            or "empty reply" in reason
        ), reason


def test_a_local_judge_outside_the_model_roots_fails_the_run_and_never_loads(
    project, monkeypatch, settings
):
    from workers.engine import generate_local

    loaded = []
    monkeypatch.setattr(generate_local, "load", lambda path, **_: loaded.append(path))
    teacher = _local_judge(project, "/models/judge")  # saved before the roots were configured
    job, _completions_ = _completions(project, 1)
    with pytest.raises(ModelPathRefused):
        filter_job(job)
    assert loaded == [] and teacher.model_path == "/models/judge"
    assert FilterRun.objects.get(job=job).status == RunStatus.FAILED
