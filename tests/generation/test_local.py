"""The local teacher: a tiny Llama built on disk, batched generation, the gpu task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distillapp.generation import services
from distillapp.generation.models import Completion, GenerationJob, JobStatus
from distillapp.generation.probe import teacher_test
from tests.generation.tiny_model import build_tiny_model
from workers.engine import generate_local as gl
from workers.engine import topk_format


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    # torch's thread pool is many times slower than one thread on a busy 2-core CI box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield gl.load(tiny_model_dir, device="cpu")
    torch.set_num_threads(threads)


PROMPTS = [
    "hello",
    "what is one plus two ?",
    "tell me a short story about a blue cat and a red dog please",
    "why is the sky blue",
]


def _requests() -> list[gl.LocalRequest]:
    return [gl.LocalRequest(i, [{"role": "user", "content": p}]) for i, p in enumerate(PROMPTS)]


def test_batched_greedy_generation_with_left_padding_matches_one_prompt_at_a_time(tiny) -> None:
    settings = gl.LocalSettings(max_new_tokens=10, top_logprobs=4)
    batched = gl.generate_batch(tiny, _requests(), settings)
    singles = [gl.generate_batch(tiny, [r], settings)[0] for r in _requests()]
    assert tiny.tokenizer.padding_side == "left"
    assert len({r.prompt_tokens for r in batched}) > 1  # the rows really were padded
    for b, s in zip(batched, singles, strict=True):
        assert b.token_ids == s.token_ids
        np.testing.assert_allclose(
            b.topk_logprobs.astype(np.float32), s.topk_logprobs.astype(np.float32), atol=2e-2
        )
        assert b.prompt_tokens == s.prompt_tokens


def test_top_k_log_probs_come_from_the_scores_as_token_ids(tiny) -> None:
    result = gl.generate_batch(
        tiny, _requests()[:1], gl.LocalSettings(max_new_tokens=6, top_logprobs=5)
    )[0]
    blob, mean = result.topk_blob()
    record = topk_format.decode(blob)
    assert (
        record.strings is None
        and record.k == 5
        and record.num_tokens == result.completion_tokens == 6
    )
    assert record.token_ids.tolist() == result.token_ids
    # Greedy: the chosen token is the most likely one, and its log-prob is the top-1 value.
    assert (record.topk_ids[:, 0] == record.token_ids).all()
    np.testing.assert_allclose(
        record.topk_logprobs[:, 0].astype(np.float32), result.chosen_logprobs, atol=1e-2
    )
    assert (np.diff(record.topk_logprobs.astype(np.float32), axis=1) <= 0).all()
    assert mean == pytest.approx(float(np.mean(result.chosen_logprobs)))
    assert result.finish_reason == "length"


def test_sampling_follows_the_seed(tiny) -> None:
    settings = gl.LocalSettings(max_new_tokens=12, temperature=1.5, top_p=1.0)
    a = gl.generate_batch(tiny, _requests(), settings, seed=3)
    b = gl.generate_batch(tiny, _requests(), settings, seed=3)
    c = gl.generate_batch(tiny, _requests(), settings, seed=4)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_generate_all_batches_and_stops_when_asked(tiny) -> None:
    seen: list[int] = []
    asks = iter([False, True])
    gl.generate_all(
        tiny,
        _requests(),
        gl.LocalSettings(max_new_tokens=2),
        batch_size=2,
        on_batch=lambda batch: seen.append(len(batch)),
        should_stop=lambda: next(asks),
    )
    assert seen == [2]


def test_the_fingerprint_covers_config_and_tokenizer(tiny_model_dir, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert gl.model_fingerprint(str(copy)) == gl.model_fingerprint(tiny_model_dir) != ""
    config = json.loads((copy / "config.json").read_text())
    config["rope_theta"] = 1234.0
    (copy / "config.json").write_text(json.dumps(config))
    assert gl.model_fingerprint(str(copy)) != gl.model_fingerprint(tiny_model_dir)
    assert gl.model_fingerprint(str(tmp_path / "missing")) == ""


@pytest.mark.django_db(transaction=True)
def test_a_local_teacher_job_runs_through_the_gpu_task(
    project, prompt_set, tiny, tiny_model_dir, enqueued, filters_sent
) -> None:
    from workers.tasks.generation import run_generation_job

    teacher = services.teacher_create(
        project=project,
        name="Tiny",
        kind="hf_local",
        model_path=tiny_model_dir,
        device="cpu",
        dtype="float32",
        batch_size=4,
        decoding={"max_tokens": 5, "top_logprobs": 3},
    )
    job = services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=teacher, samples_per_prompt=2
    )
    assert job.teacher_snapshot["fingerprint"] == gl.model_fingerprint(tiny_model_dir)
    assert run_generation_job.apply(args=(job.pk,)).get() == "completed"
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.done == 12 and job.completion_tokens == 60
    rows = Completion.objects.filter(job=job)
    assert rows.count() == 12 and all(c.topk and c.mean_logprob is not None for c in rows)
    record = topk_format.decode(rows.first().topk)
    assert record.strings is None and record.k == 3 and record.num_tokens == 5
    assert run_generation_job.apply(args=(job.pk,)).get() == "ended"
    assert filters_sent == [job.pk]


@pytest.mark.django_db(transaction=True)
def test_a_local_job_refuses_to_resume_on_changed_weights(
    project, prompt_set, tiny, tiny_model_dir, enqueued, tmp_path
) -> None:
    import shutil

    from workers.tasks.generation import run_generation_job

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    teacher = services.teacher_create(
        project=project, name="Tiny", kind="hf_local", model_path=str(folder), device="cpu"
    )
    job = services.generation_job_start(project=project, prompt_set=prompt_set, teacher=teacher)
    (folder / "tokenizer_config.json").write_text("{}")
    run_generation_job.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "changed since the job started" in job.message
    assert not GenerationJob.objects.filter(pk=job.pk, completions__isnull=False).exists()


@pytest.mark.django_db
def test_testing_a_local_teacher_generates_a_few_tokens_without_torch_in_the_web_process(
    project, tiny_model_dir
) -> None:
    teacher = services.teacher_create(
        project=project, name="Tiny", kind="hf_local", model_path=tiny_model_dir
    )
    result = teacher_test(teacher=teacher, prompt="hello")
    assert result.ok, result.error
    assert result.details["completion_tokens"] == 8 and result.details["fingerprint"]


@pytest.mark.django_db
def test_testing_a_local_teacher_reports_a_missing_folder(project, tmp_path) -> None:
    teacher = services.teacher_create(
        project=project, name="Tiny", kind="hf_local", model_path=str(tmp_path / "nope")
    )
    result = teacher_test(teacher=teacher)
    assert not result.ok and "does not exist" in result.error


@pytest.mark.django_db(transaction=True)
def test_a_local_job_never_loads_a_model_from_outside_the_model_roots(
    project, prompt_set, tiny_model_dir, enqueued, filters_sent, settings, monkeypatch
) -> None:
    """A teacher saved while its folder was allowed; the operator then narrowed the roots."""
    from workers.tasks.generation import run_generation_job

    teacher = services.teacher_create(
        project=project, name="Tiny", kind="hf_local", model_path=tiny_model_dir, device="cpu"
    )
    job = services.generation_job_start(
        project=project, prompt_set=prompt_set, teacher=teacher, samples_per_prompt=1
    )
    settings.MODEL_ROOTS = []
    loaded: list[str] = []
    monkeypatch.setattr(gl, "load", lambda path, **_: loaded.append(path))
    monkeypatch.setattr(gl, "model_fingerprint", lambda path: loaded.append(path) or "x")
    run_generation_job.apply(args=(job.pk,))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "DISTILLERY_MODEL_ROOTS" in job.message
    assert loaded == [] and not Completion.objects.filter(job=job).exists()
