"""Create (or update) the demo organisation, admin user and project for `make run`. Idempotent."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from distillapp.accounts.models import Membership, Organization, Role
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet
from distillapp.prompts.services import prompt_set_import

DEMO_PROMPTS = Path(settings.BASE_DIR) / "docs" / "samples" / "demo_prompts.jsonl"
GUIDELINES = """# How to review

- **Approve** answers that are correct, complete and no longer than needed.
- **Reject** answers with factual errors, invented facts, unsafe advice or a wrong format
  (e.g. not JSON when the system prompt asks for JSON); say why in one line.
- **Edit** small slips (a typo, a missing unit) instead of rejecting.
- When a `reference` is shown, the answer must agree with it.
"""


def _read_password(path: Path) -> str | None:
    try:
        line = path.read_text().strip()
    except OSError:
        return None
    return line.rsplit(" / ", 1)[-1] if " / " in line else None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


class Command(BaseCommand):
    help = "Create the demo organisation, admin user and project (with sample prompts). Safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        login_file = Path(settings.VAR_DIR) / "demo-login.txt"
        with transaction.atomic():
            org, _ = Organization.objects.get_or_create(name="Demo")
            user_model = get_user_model()
            user = user_model.objects.filter(username="admin").first()
            password = _read_password(login_file)
            if user is None or password is None or not user.check_password(password):
                password = secrets.token_urlsafe(12)
                user = user or user_model(username="admin")
                user.set_password(password)
            user.is_staff = True
            user.is_superuser = True
            user.save()
            Membership.objects.update_or_create(user=user, org=org, defaults={"role": Role.OWNER})
            project, created = Project.objects.get_or_create(
                org=org,
                name="Demo project",
                defaults={"guidelines_md": GUIDELINES, "created_by": user},
            )
            if not created and not project.guidelines_md:
                project.guidelines_md = GUIDELINES
                project.save(update_fields=["guidelines_md"])
            if not PromptSet.objects.filter(project=project).exists():
                result = prompt_set_import(
                    project=project,
                    file=DEMO_PROMPTS,
                    name="Demo prompts",
                    heldout_fraction=0.1,
                    seed=42,
                    created_by=user,
                )
                self.stdout.write(
                    f"Imported {result.imported} demo prompts ({result.heldout} held out, "
                    f"{result.duplicates_dropped} duplicate dropped)."
                )
        _write_private(login_file, f"Log in at http://127.0.0.1:8000 as admin / {password}\n")
        self.stdout.write(f"Log in at http://127.0.0.1:8000 as admin / {password}")
