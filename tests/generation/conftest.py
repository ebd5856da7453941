from __future__ import annotations

import hashlib

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
    settings.RUN_STALE_SECONDS = 60
    return settings


@pytest.fixture
def enqueued(sent_tasks):
    """The job ids whose generation task was sent (tests run the job themselves)."""
    return _SentArgs(sent_tasks, "workers.tasks.generation.run_generation_job")


class _SentArgs(list):
    """A live view of the first argument of each sent task of one name, compared like a list."""

    def __init__(self, sent, name: str) -> None:
        super().__init__()
        self._sent, self._name = sent, name

    def _current(self) -> list:
        return [s.args[0] for s in self._sent if s.name == self._name]

    def __eq__(self, other: object) -> bool:
        return self._current() == other

    def __len__(self) -> int:
        return len(self._current())

    def __iter__(self):
        return iter(self._current())

    def __getitem__(self, index):
        return self._current()[index]

    def clear(self) -> None:
        self._sent[:] = [s for s in self._sent if s.name != self._name]

    def __repr__(self) -> str:
        return repr(self._current())


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


FILTER_TASK = "workers.tasks.filters.execute_filter_run"


@pytest.fixture
def filters_options(sent_tasks) -> list[dict]:
    """The options (the queue) of each filter run `filters_sent` recorded."""

    class Options(list):
        def __eq__(self, other: object) -> bool:
            return [{"queue": s.queue} for s in sent_tasks if s.name == FILTER_TASK] == other

    return Options()


@pytest.fixture
def filters_sent(sent_tasks):
    """The job ids of the filter runs sent (each run names the job it filters)."""
    from distillapp.filters.models import FilterRun

    class JobIds(list):
        def _current(self) -> list:
            ids = [s.args[0] for s in sent_tasks if s.name == FILTER_TASK]
            job_of = dict(FilterRun.objects.filter(pk__in=ids).values_list("pk", "job_id"))
            return [job_of.get(i) for i in ids]

        def __eq__(self, other: object) -> bool:
            return self._current() == other

    return JobIds()
