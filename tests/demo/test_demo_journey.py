"""The README's demo path, through the same services and task functions the pages and workers
call: demo_setup → inspect the student base → generate with the teacher (top-k) → the automatic
filters check each answer against its reference → build a dataset version from the answers that
passed → train a kd student (every step a metric row: the loss curve) → the run succeeds."""

from __future__ import annotations

import importlib

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.services import dataset_create, dataset_version_build
from distillapp.generation.models import Completion, Teacher
from distillapp.generation.services import generation_job_start
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet
from distillapp.training import selectors
from distillapp.training.models import BaseModel, TrainingMetric
from distillapp.training.services import training_run_launch
from tests.demo.test_demo_setup import run as demo_setup
from tests.demo.test_demo_setup import var_dir  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def drain(sent_tasks, done: set[int]) -> None:
    """Run every task sent so far (and those they send), once each, like a worker would."""
    while len(done) < len(sent_tasks):
        for i, task in enumerate(list(sent_tasks)):
            if i in done:
                continue
            done.add(i)
            module, name = task.name.rsplit(".", 1)
            getattr(importlib.import_module(module), name)(*task.args)


def test_the_demo_path_from_generation_to_a_kd_students_loss_curve(var_dir, sent_tasks):  # noqa: F811
    done: set[int] = set()
    demo_setup()
    project = Project.objects.get(name="Demo project")
    user = project.created_by
    drain(sent_tasks, done)  # the base model's inspection
    base = BaseModel.objects.get(project=project)
    assert base.status == RunStatus.SUCCEEDED, base.message
    teacher = Teacher.objects.get(project=project)
    check = {t["teacher_id"]: t for t in selectors.base_model_teachers(base_model=base)}
    assert check[teacher.pk]["kd"] is True, check

    prompts = PromptSet.objects.get(project=project, name="Reverse (demo task)")
    job = generation_job_start(
        project=project, prompt_set=prompts, teacher=teacher, created_by=user
    )
    drain(sent_tasks, done)  # generation, then the filter run it triggers
    job.refresh_from_db()
    assert job.status == RunStatus.SUCCEEDED, job.message
    completions = Completion.objects.filter(job=job)
    train_prompts = prompts.total_count - prompts.heldout_count
    assert completions.count() == train_prompts
    right = sum(c.text == c.prompt.reference for c in completions.select_related("prompt"))
    assert right >= 0.9 * train_prompts

    dataset = dataset_create(project=project, name="reverse", user=user)
    version = dataset_version_build(
        dataset=dataset,
        recipe={"jobs": [job.pk], "include_unreviewed": True, "validation_fraction": 0.1},
        user=user,
    )
    drain(sent_tasks, done)
    version = DatasetVersion.objects.get(pk=version.pk)
    assert version.status == RunStatus.SUCCEEDED, version.message
    assert version.counts["kd_rows"] >= 0.8 * train_prompts, version.counts

    run = training_run_launch(
        project=project, user=user, dataset_version_id=version.pk, base_model_id=base.pk,
        method="kd", config={"max_steps": 12, "lora": False, "batch_size": 16,
                             "learning_rate": 3e-3, "logging_steps": 1, "save_steps": 6},
    )  # fmt: skip
    drain(sent_tasks, done)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.message, run.log_tail[-2000:])
    losses = list(TrainingMetric.objects.filter(run=run).values_list("train_loss", flat=True))
    assert len(losses) == 12 and all(x is not None for x in losses)
    assert losses[-1] < losses[0]
