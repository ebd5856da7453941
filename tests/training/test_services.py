"""Base models and launches: validation names the field, kd is refused with the reason, the
preview computes steps and tokens, versions a run used cannot be deleted, audit records."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from distillapp.accounts.models import AuditEvent
from distillapp.core.runs.models import RunStatus
from distillapp.datasets.services import dataset_version_delete, version_in_use
from distillapp.training import selectors, services
from distillapp.training.models import BaseModel, TrainingRun
from tests.training.conftest import FAST, make_version, ready_base_model

pytestmark = pytest.mark.django_db


def _errors(exc: pytest.ExceptionInfo) -> dict:
    return exc.value.message_dict


def test_a_base_model_outside_the_model_roots_is_refused(project, alice, sent_tasks):
    with pytest.raises(ValidationError) as exc:
        services.base_model_create(project=project, user=alice, name="etc", path="/etc")
    assert "DISTILLERY_MODEL_ROOTS" in _errors(exc)["path"][0]
    assert not sent_tasks


def test_a_base_model_needs_exactly_one_of_path_and_hub_id(project, alice, tiny_base):
    with pytest.raises(ValidationError) as exc:
        services.base_model_create(project=project, user=alice, name="x")
    assert "path" in _errors(exc)
    with pytest.raises(ValidationError) as exc:
        services.base_model_create(
            project=project, user=alice, name="x", path=str(tiny_base), hub_id="a/b"
        )
    assert "path" in _errors(exc)
    with pytest.raises(ValidationError) as exc:
        services.base_model_create(project=project, user=alice, name="x", hub_id="../etc/passwd")
    assert "hub_id" in _errors(exc)


def test_adding_a_base_model_queues_its_inspection_on_gpu_and_audits(
    project, alice, tiny_base, sent_tasks
):
    b = services.base_model_create(project=project, user=alice, name="tiny", path=str(tiny_base))
    assert b.status == RunStatus.QUEUED
    assert [(t.name, t.args, t.queue) for t in sent_tasks] == [
        ("workers.tasks.training.inspect_base_model", (b.pk,), "gpu")
    ]
    assert AuditEvent.objects.filter(action="base_model.add", target="tiny").exists()
    with pytest.raises(ValidationError) as exc:
        services.base_model_create(project=project, user=alice, name="tiny", hub_id="a/b")
    assert "name" in _errors(exc)
    services.base_model_delete(base_model=b, user=alice)
    assert AuditEvent.objects.filter(action="base_model.delete", target="tiny").exists()


def test_launch_errors_name_each_field(project, alice, version, base_model, sent_tasks):
    with pytest.raises(ValidationError) as exc:
        services.training_run_launch(
            project=project,
            user=alice,
            dataset_version_id="nope",
            base_model_id=999999,
            method="rl",
            config={"batch_size": 0, "learning_rate": "fast", "bogus": 1, "lora": "maybe"},
        )
    errors = _errors(exc)
    assert set(errors) >= {
        "dataset_version_id",
        "base_model_id",
        "method",
        "batch_size",
        "learning_rate",
        "bogus",
        "lora",
    }
    assert "between 1 and 4096" in errors["batch_size"][0]
    assert not TrainingRun.objects.exists() and not sent_tasks


def test_a_base_model_not_inspected_yet_is_refused(project, alice, version, base_model):
    BaseModel.objects.filter(pk=base_model.pk).update(status=RunStatus.FAILED, message="bad")
    with pytest.raises(ValidationError) as exc:
        services.training_run_launch(
            project=project, user=alice, dataset_version_id=version.pk,
            base_model_id=base_model.pk,
        )  # fmt: skip
    assert "bad" in _errors(exc)["base_model_id"][0]


def test_kd_is_refused_when_the_version_has_no_teacher_token_ids(
    project, alice, version, base_model
):
    with pytest.raises(ValidationError) as exc:
        services.training_run_launch(
            project=project, user=alice, dataset_version_id=version.pk,
            base_model_id=base_model.pk, method="kd",
        )  # fmt: skip
    assert "no rows with the teacher's token ids" in _errors(exc)["method"][0]


def test_kd_is_refused_with_the_vocabulary_reason_and_allowed_when_they_match(
    project, alice, media, tiny_base, local_teacher, sent_tasks
):
    kd_version = make_version(project, media, kd_rows=8)
    differs = ready_base_model(
        project,
        tiny_base,
        teachers={
            str(local_teacher.pk): {"kd": False, "reason": "12 ids differ. SFT still works."}
        },
    )
    with pytest.raises(ValidationError) as exc:
        services.training_run_launch(
            project=project, user=alice, dataset_version_id=kd_version.pk,
            base_model_id=differs.pk, method="kd", teacher_id=local_teacher.pk,
        )  # fmt: skip
    assert _errors(exc)["method"] == ["12 ids differ. SFT still works."]
    same = ready_base_model(
        project, tiny_base, teachers={str(local_teacher.pk): {"kd": True, "reason": ""}}
    )
    run = services.training_run_launch(
        project=project, user=alice, dataset_version_id=kd_version.pk, base_model_id=same.pk,
        method="kd", teacher_id=local_teacher.pk,
    )  # fmt: skip
    assert run.method == "kd" and run.teacher == local_teacher


def test_launch_queues_on_gpu_with_defaults_preview_and_audit(
    project, alice, version, base_model, sent_tasks
):
    run = services.training_run_launch(
        project=project, user=alice, dataset_version_id=version.pk,
        base_model_id=base_model.pk, config={"batch_size": "4", "epochs": 2},
    )  # fmt: skip
    assert run.status == RunStatus.QUEUED and run.method == "sft"
    assert run.config["batch_size"] == 4 and run.config["lora_r"] == 16  # TrainConfig default
    # 32 rows, 4 a step: 8 steps an epoch, 2 epochs.
    assert run.preview["steps_per_epoch"] == 8 and run.preview["total_steps"] == 16
    assert run.total == 16 and run.preview["tokens_total"] > 0
    assert run.out_dir == f"orgs/{project.org_id}/training/{run.pk}"
    assert [(t.name, t.queue) for t in sent_tasks] == [
        ("workers.tasks.training.run_training", "gpu")
    ]
    event = AuditEvent.objects.get(action="training.launch")
    assert event.details["run"] == run.pk


def test_queue_position_counts_running_and_earlier_queued_runs(
    project, alice, version, base_model, sent_tasks
):
    runs = [
        services.training_run_launch(
            project=project,
            user=alice,
            dataset_version_id=version.pk,
            base_model_id=base_model.pk,
            config=FAST,
        )  # fmt: skip
        for _ in range(3)
    ]
    TrainingRun.objects.filter(pk=runs[0].pk).update(status=RunStatus.RUNNING)
    for r in runs:
        r.refresh_from_db()
    assert [selectors.training_queue_position(run=r) for r in runs] == [None, 2, 3]


def test_a_version_a_training_run_used_cannot_be_deleted(
    project, alice, version, base_model, sent_tasks
):
    assert version_in_use(version=version) is None
    services.training_run_launch(
        project=project, user=alice, dataset_version_id=version.pk, base_model_id=base_model.pk
    )
    assert "Training runs used this version" in version_in_use(version=version)
    with pytest.raises(ValidationError):
        dataset_version_delete(version=version)
    with pytest.raises(ValidationError):
        services.base_model_delete(base_model=base_model, user=alice)


def test_cancel_of_a_queued_run_and_resume(project, alice, version, base_model, sent_tasks):
    run = services.training_run_launch(
        project=project, user=alice, dataset_version_id=version.pk, base_model_id=base_model.pk
    )
    run = services.training_run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    run = services.training_run_resume(run=run)
    assert run.status == RunStatus.QUEUED and len(sent_tasks) == 2
