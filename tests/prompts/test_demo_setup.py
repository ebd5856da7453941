from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from distillapp.accounts.models import Membership, Role
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet

pytestmark = pytest.mark.django_db


def run() -> str:
    out = io.StringIO()
    call_command("demo_setup", "--no-models", stdout=out)  # models: tests/demo
    return out.getvalue()


def test_demo_setup_is_idempotent_and_prints_a_working_login(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "VAR_DIR", tmp_path)
    first = run()
    second = run()
    password = first.strip().splitlines()[-1].rsplit(" / ", 1)[1]
    assert f"Log in at http://127.0.0.1:8000 as admin / {password}" in second
    login_file = Path(tmp_path) / "demo-login.txt"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600 and password in login_file.read_text()
    user = get_user_model().objects.get(username="admin")
    assert user.check_password(password) and user.is_staff and user.is_superuser
    project = Project.objects.get(name="Demo project", org__name="Demo")
    assert project.guidelines_md
    assert Membership.objects.get(user=user, org=project.org).role == Role.OWNER
    prompt_set = PromptSet.objects.get(project=project, name="Demo prompts")
    assert prompt_set.total_count >= 35 and prompt_set.heldout_count >= 1
    assert prompt_set.prompts.filter(messages__1__isnull=False).exists()  # some chats
    assert prompt_set.prompts.exclude(reference=None).exists()
