"""Shared fixtures: the alice/bob/charlie pattern and helpers for real services.

- alice: owner of `org`; vera: viewer in `org`; bob: reviewer in `org`; adam: admin in `org`;
  charlie: owner of another organisation (the outsider).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

import pytest
from django.test import Client

from distillapp.accounts.models import Role
from tests.factories import (
    CompletionFactory,
    GenerationJobFactory,
    MembershipFactory,
    OrganizationFactory,
    ProjectFactory,
    PromptFactory,
    PromptSetFactory,
    TeacherFactory,
    UserFactory,
)


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


USING_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
USING_REDIS = os.environ.get("CELERY_BROKER_URL", "").startswith("redis://")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The real hasher costs ~0.3 s per user on these machines; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _loopback_outbound_and_tmp_model_roots(settings, monkeypatch, tmp_path_factory):
    """The fake teachers and judges listen on 127.0.0.1, and tiny models live in pytest's temp
    folders: allow exactly those, as an operator would with DISTILLERY_OUTBOUND_ALLOW and
    DISTILLERY_MODEL_ROOTS. tests/security sets its own, stricter values."""
    loopback = ["127.0.0.1/32", "::1/128"]
    settings.OUTBOUND_ALLOW = loopback
    # Engine code built without a policy (worker subprocesses too) reads the environment.
    monkeypatch.setenv("DISTILLERY_OUTBOUND_ALLOW", ",".join(loopback))
    settings.MODEL_ROOTS = [*settings.MODEL_ROOTS, tmp_path_factory.getbasetemp()]


@pytest.fixture(autouse=True)
def _empty_cache():
    # Cached values (e.g. review progress counts) are keyed by ids a rolled-back test may reuse.
    from django.core.cache import cache

    cache.clear()


@dataclass(frozen=True)
class SentTask:
    name: str
    args: tuple
    queue: str


@pytest.fixture
def sent_tasks(monkeypatch) -> list[SentTask]:
    """Every task the code under test enqueues (by name), recorded at once instead of sent to a
    broker after commit; tests then run what they need themselves."""
    from distillapp.core import dispatch

    sent: list[SentTask] = []
    monkeypatch.setattr(
        dispatch,
        "enqueue",
        lambda name, *args, queue: sent.append(SentTask(name, args, str(queue))),
    )
    return sent


@pytest.fixture
def org(db):
    return OrganizationFactory(name="Acme")


@pytest.fixture
def other_org(db):
    return OrganizationFactory(name="Globex")


def _member(org, username: str, role: str):
    user = UserFactory(username=username)
    MembershipFactory(user=user, org=org, role=role)
    return user


@pytest.fixture
def alice(org):
    return _member(org, "alice", Role.OWNER)


@pytest.fixture
def adam(org):
    return _member(org, "adam", Role.ADMIN)


@pytest.fixture
def bob(org):
    return _member(org, "bob", Role.REVIEWER)


@pytest.fixture
def vera(org):
    return _member(org, "vera", Role.VIEWER)


@pytest.fixture
def charlie(other_org):
    return _member(other_org, "charlie", Role.OWNER)


@pytest.fixture
def project(org, alice):
    return ProjectFactory(org=org, name="Support bot", created_by=alice)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(alice) -> Client:
    return login(alice)


@pytest.fixture
def api_client():
    """A client that sends `Authorization: Bearer <token>` for the given user."""
    from distillapp.accounts.services import api_token_create

    def make(user) -> Client:
        _token, plain = api_token_create(user=user, name="tests")
        return Client(HTTP_AUTHORIZATION=f"Bearer {plain}")

    return make


def _dataset_values(project, alice) -> dict:
    """A dataset and one (not yet built) version of it, for the access matrix."""
    from distillapp.datasets.models import Dataset, DatasetVersion

    dataset = Dataset.objects.create(project=project, name="world", created_by=alice)
    version = DatasetVersion.objects.create(
        dataset=dataset, project=project, number=1, created_by=alice
    )
    return {"dataset_id": dataset.pk, "version_id": version.pk}


def _evaluation_values(project, alice) -> dict:
    """An eval set with one item (with an unverified reference), for the access matrix."""
    from distillapp.evaluation.models import EvalItem, EvalSet

    eval_set = EvalSet.objects.create(
        project=project, name="world", kind="uploaded", item_count=1, created_by=alice
    )
    item = EvalItem.objects.create(
        eval_set=eval_set, project=project, position=1, text="2 + 2?", reference="4"
    )
    from distillapp.evaluation.models import EvalRun

    run = EvalRun.objects.create(project=project, name="world", created_by=alice)
    run.eval_sets.set([eval_set])
    return {"eval_set_id": eval_set.pk, "eval_item_id": item.pk, "eval_run_id": run.pk}


def _training_values(project, alice, version_id: int) -> dict:
    """A base model, a (queued) training run of it with an artefact row, for the access matrix."""
    from distillapp.training.models import BaseModel, TrainingArtifact, TrainingRun

    base_model = BaseModel.objects.create(
        project=project, name="world", source="path", path="/nonexistent", created_by=alice
    )
    run = TrainingRun.objects.create(
        project=project, dataset_version_id=version_id, base_model=base_model, created_by=alice
    )
    TrainingArtifact.objects.create(run=run, name="adapter", path="nowhere")
    return {"base_model_id": base_model.pk, "training_run_id": run.pk, "artifact_name": "adapter"}


@pytest.fixture
def world(project, alice, adam, bob, vera, charlie):
    """One of every object kind in `project`, keyed by the URL kwarg that names it."""
    from distillapp.accounts.services import api_token_create, invitation_create

    prompt_set = PromptSetFactory(project=project)
    PromptFactory(prompt_set=prompt_set)
    teacher = TeacherFactory(project=project)
    job = GenerationJobFactory(project=project, teacher=teacher, prompt_set=prompt_set)
    completion = CompletionFactory(job=job, prompt=PromptFactory(prompt_set=prompt_set))
    token, _plain = api_token_create(user=alice, name="alice's")
    invitation, _link = invitation_create(
        org=project.org, role=Role.VIEWER, actor_membership=alice.memberships.get()
    )
    values = {
        "org_id": project.org_id,
        "project_id": project.pk,
        "prompt_set_id": prompt_set.pk,
        "teacher_id": teacher.pk,
        "job_id": job.pk,
        "completion_id": completion.pk,
        "token_id": token.pk,
        "invitation_id": invitation.pk,
        "username": "vera",
        **_dataset_values(project, alice),
        **_evaluation_values(project, alice),
    }
    values.update(_training_values(project, alice, values["version_id"]))
    return {
        "values": values,
        "alice": alice,
        "adam": adam,
        "bob": bob,
        "vera": vera,
        "charlie": charlie,
    }
