"""Create (or update) the demo organisation, admin user and project for `make run`. Idempotent.

The demo project also gets one task a newcomer can take from generation to a trained student on a
CPU: reversing short strings of letters. Its tiny teacher and student base models are built on
first run by `python -m workers.engine.demo_models` in a child process (torch never loads into
this command's process), under `$DISTILLERY_VAR_DIR/models/`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from distillapp.accounts.models import Membership, Organization, Role
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.generation.services import teacher_create
from distillapp.projects.models import Project
from distillapp.prompts.models import PromptSet
from distillapp.prompts.services import prompt_set_import
from distillapp.training.models import BaseModel
from distillapp.training.services import base_model_create

DEMO_PROMPTS = Path(settings.BASE_DIR) / "docs" / "samples" / "demo_prompts.jsonl"
# Written by `python -m workers.engine.demo_models --prompts` (120 strings the teacher never saw).
REVERSE_PROMPTS = Path(settings.BASE_DIR) / "docs" / "samples" / "demo_reverse_prompts.jsonl"
REVERSE_SET = "Reverse (demo task)"
TEACHER_NAME = "Demo reverser (local)"
STUDENT_NAME = "Demo student (tiny)"
# Greedy, short answers, and the top 20 log-probabilities of every token (what kd trains on).
TEACHER_DECODING = {"temperature": 0.0, "max_tokens": 8, "top_logprobs": 20}
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


def build_demo_models(models_root: Path) -> dict[str, Any]:
    """Build (or find) the demo teacher and student base in a child process; their folders."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.engine.demo_models", str(models_root)],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
    except OSError as exc:
        raise CommandError(f"Could not start the demo model build: {exc}") from exc
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise CommandError(f"Building the demo models failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Command(BaseCommand):
    help = (
        "Create the demo organisation, admin user and project (sample prompts, the reverse task "
        "with its tiny local teacher and student base model). Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-models",
            action="store_true",
            help="Skip building and registering the demo teacher and student base model.",
        )

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
            if not PromptSet.objects.filter(project=project, name=REVERSE_SET).exists():
                result = prompt_set_import(
                    project=project,
                    file=REVERSE_PROMPTS,
                    name=REVERSE_SET,
                    heldout_fraction=0.1,
                    seed=42,
                    created_by=user,
                )
                self.stdout.write(
                    f"Imported {result.imported} reverse-task prompts ({result.heldout} held out)."
                )
        if not options.get("no_models"):
            try:
                self._demo_models(project, user)
            except CommandError as exc:
                # The rest of the demo works without them; say why they are missing.
                self.stderr.write(f"Demo models skipped: {exc}")
        _write_private(login_file, f"Log in at http://127.0.0.1:8000 as admin / {password}\n")
        self.stdout.write(f"Log in at http://127.0.0.1:8000 as admin / {password}")

    def _demo_models(self, project: Project, user: Any) -> None:
        models_root = Path(settings.VAR_DIR) / "models"
        have_teacher = Teacher.objects.filter(project=project, name=TEACHER_NAME).exists()
        have_student = BaseModel.objects.filter(project=project, name=STUDENT_NAME).exists()
        if not (models_root / "demo-teacher").exists():
            self.stdout.write("Building the demo teacher and student (once; under a minute)...")
        built = build_demo_models(models_root)
        for role, meta in built.get("built", {}).items():
            details = ", ".join(f"{k} {v}" for k, v in meta.items() if k != "recipe")
            self.stdout.write(f"Built the demo {role}: {details}.")
        try:
            if not have_teacher:
                teacher_create(
                    project=project,
                    name=TEACHER_NAME,
                    kind=TeacherKind.HF_LOCAL,
                    model_path=built["teacher"],
                    dtype="float32",
                    batch_size=32,
                    decoding=TEACHER_DECODING,
                )
                self.stdout.write(f"Added the local teacher “{TEACHER_NAME}”.")
            if not have_student:
                base_model_create(
                    project=project, user=user, name=STUDENT_NAME, path=built["student"]
                )
                self.stdout.write(f"Added the base model “{STUDENT_NAME}” (a worker inspects it).")
        except ValidationError as exc:
            # E.g. DISTILLERY_MODEL_ROOTS no longer includes $DISTILLERY_VAR_DIR/models.
            raise CommandError(
                f"Could not register the demo models: {' '.join(exc.messages)}"
            ) from exc
