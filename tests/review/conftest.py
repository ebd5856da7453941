from __future__ import annotations

import pytest

from distillapp.review.services import review_queue_sync
from tests.factories import CompletionFactory, GenerationJobFactory, PromptFactory, TeacherFactory


@pytest.fixture
def make_completions():
    """make_completions(project, n, samples=1, **completion_fields) → completions, queued for review."""

    def make(project, n: int, samples: int = 1, job=None, sync: bool = True, **fields):
        if job is None:
            teacher = TeacherFactory(project=project)
            job = GenerationJobFactory(
                teacher=teacher,
                project=project,
                teacher_snapshot={
                    "name": teacher.name,
                    "model": "teacher-model",
                    "decoding": {"temperature": 0.7},
                },
            )
        out = []
        for _ in range(n):
            prompt = PromptFactory(prompt_set=job.prompt_set)
            for s in range(samples):
                out.append(CompletionFactory(job=job, prompt=prompt, sample_index=s, **fields))
        if sync:
            review_queue_sync(project=project, force=True)
        return out

    return make


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The shared fixtures create several users per test; PBKDF2 dominated these tests' time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
