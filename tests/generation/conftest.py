from __future__ import annotations

import hashlib
import sys
import types

import pytest

from distillapp.generation import services
from distillapp.prompts.models import Split
from tests.factories import PromptFactory, PromptSetFactory
from tests.generation.fake_openai import FakeOpenAI

API_KEY = "sk-test-SECRET-abcd1234WXYZ"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Users are made in almost every test here; PBKDF2 would dominate their run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def fake_openai():
    with FakeOpenAI(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def fast_retries(settings):
    settings.TEACHER_MAX_ATTEMPTS = 3
    settings.TEACHER_BACKOFF_BASE = 0.01
    settings.TEACHER_BACKOFF_CAP = 0.05
    settings.TEACHER_REQUEST_TIMEOUT = 2
    settings.GENERATION_STALE_SECONDS = 60
    return settings


@pytest.fixture
def enqueued(monkeypatch):
    """Record job enqueues instead of sending them to a broker (tests run the job themselves)."""
    calls: list[int] = []
    monkeypatch.setattr(services, "_enqueue", lambda job: calls.append(job.pk))
    return calls


def make_prompt(prompt_set, text: str, split: str = Split.TRAIN, **kwargs):
    return PromptFactory(
        prompt_set=prompt_set,
        text=text,
        messages=[{"role": "user", "content": text}],
        split=split,
        text_hash=hashlib.sha256(text.encode()).hexdigest()[:32],
        **kwargs,
    )


@pytest.fixture
def prompt_set(project):
    ps = PromptSetFactory(project=project, name="Support questions")
    for i in range(6):
        make_prompt(ps, f"question {i}", metadata={"topic": "billing" if i % 2 else "login"})
    make_prompt(ps, "held out question", split=Split.HELDOUT)
    ps.train_count, ps.heldout_count, ps.total_count = 6, 1, 7
    ps.save()
    return ps


@pytest.fixture
def api_teacher(project, fake_openai):
    return services.teacher_create(
        project=project,
        name="Fake GPT",
        kind="openai",
        base_url=fake_openai.base_url,
        model="teacher-model",
        api_key=API_KEY,
        concurrency=4,
        price_input_per_m="1.5",
        price_output_per_m="6",
        decoding={
            "temperature": 0.2,
            "max_tokens": 64,
            "system_prompt": "Be brief.",
            "top_logprobs": 3,
        },
    )


@pytest.fixture
def filters_options() -> list[dict]:
    """The options (e.g. the queue) of each filter run `filters_sent` recorded."""
    return []


@pytest.fixture
def filters_sent(monkeypatch, filters_options):
    """The job ids of the filter runs enqueued, recorded by a stand-in task module."""
    sent: list[int] = []

    def send(args, **options):
        sent.append(args[0])
        filters_options.append(options)

    fake = types.ModuleType("workers.tasks.filters")
    fake.run_job_filters = types.SimpleNamespace(apply_async_on_commit=send)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workers.tasks.filters", fake)
    return sent
