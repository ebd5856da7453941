"""Re-encrypt every stored teacher API key with the first key of DISTILLERY_ENCRYPTION_KEYS.

Rotation: put a new key first in DISTILLERY_ENCRYPTION_KEYS (keep the old ones after it), restart,
run `manage.py rotate_secrets`, then drop the old keys. Idempotent; safe to run while jobs run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from distillapp.core.crypto import SecretDecryptionError
from distillapp.generation.models import Teacher
from distillapp.generation.services import teacher_rotate_key


class Command(BaseCommand):
    help = "Re-encrypt teacher API keys with the current (first) encryption key."

    def handle(self, *args: Any, **options: Any) -> None:
        rotated = failed = 0
        for teacher in Teacher.objects.exclude(api_key_encrypted="").iterator():
            try:
                if teacher_rotate_key(teacher=teacher):
                    rotated += 1
            except SecretDecryptionError:
                failed += 1
                self.stderr.write(
                    f"teacher {teacher.pk} ({teacher.name}): no configured key decrypts it"
                )
        self.stdout.write(f"Re-encrypted {rotated} API key(s).")
        if failed:
            raise CommandError(
                f"{failed} key(s) could not be decrypted with DISTILLERY_ENCRYPTION_KEYS."
            )
