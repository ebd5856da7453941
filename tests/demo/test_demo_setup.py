"""`manage.py demo_setup` registers the demo task end to end: the reverse prompts (with
references), the local teacher (top-k on) and the student base model; running it again adds
nothing twice and does not rebuild the models."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from distillapp.generation.models import Teacher, TeacherKind
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet
from distillapp.training.models import BaseModel
from workers.engine import demo_models as dm

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def var_dir(tmp_path, monkeypatch, demo_models) -> Path:
    """A fresh VAR_DIR whose models/ already holds the session's build (a copy, not a rebuild)."""
    models = tmp_path / "models"
    models.mkdir()
    for name in (dm.TEACHER_DIR, dm.STUDENT_DIR):
        shutil.copytree(Path(demo_models[name.removeprefix("demo-")]), models / name)
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    monkeypatch.setattr(settings, "MODEL_ROOTS", [models])
    return tmp_path


def run() -> str:
    out = io.StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


def test_demo_setup_registers_the_reverse_task_once(var_dir, sent_tasks):
    first = run()
    assert "Built the demo" not in first  # the models were there already
    second = run()
    project = Project.objects.get(name="Demo project", org__name="Demo")

    prompt_set = PromptSet.objects.get(project=project, name="Reverse (demo task)")
    assert prompt_set.total_count == dm.DEMO_PROMPTS and prompt_set.heldout_count >= 1
    prompt = prompt_set.prompts.get(external_id="reverse-001")
    assert prompt.reference == prompt.text.removeprefix(dm.PREFIX)[::-1]

    teacher = Teacher.objects.get(project=project)
    assert teacher.kind == TeacherKind.HF_LOCAL
    assert Path(teacher.model_path) == var_dir / "models" / dm.TEACHER_DIR
    assert teacher.decoding["top_logprobs"] == 20 and teacher.decoding["temperature"] == 0

    base = BaseModel.objects.get(project=project)
    assert Path(base.path) == var_dir / "models" / dm.STUDENT_DIR
    inspections = [t for t in sent_tasks if t.name == "workers.tasks.training.inspect_base_model"]
    assert len(inspections) == 1 and inspections[0].args == (base.pk,)
    assert "Added the local teacher" in first and "Added the local teacher" not in second


def test_demo_setup_builds_missing_models_in_a_child_process(tmp_path, monkeypatch, sent_tasks):
    """No torch in this process: the build runs in a subprocess (here a stand-in that reports)."""
    import subprocess

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 3, stdout="", stderr="Killed\n")

    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    monkeypatch.setattr(subprocess, "run", fake_run)
    err = io.StringIO()
    call_command("demo_setup", stdout=io.StringIO(), stderr=err)
    assert calls and calls[0][1:3] == ["-m", "workers.engine.demo_models"]
    assert "Demo models skipped: Building the demo models failed (exit 3)" in err.getvalue()
    assert not Teacher.objects.exists() and not BaseModel.objects.exists()
