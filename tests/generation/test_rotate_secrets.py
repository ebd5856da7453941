from __future__ import annotations

import base64
import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command

from distillapp.core.crypto import SecretDecryptionError, decrypt_secret
from distillapp.generation import services
from tests.generation.conftest import API_KEY

pytestmark = pytest.mark.django_db


def test_rotation_re_encrypts_keys_under_the_new_first_key(settings, api_teacher) -> None:
    old_key = settings.ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new_key, old_key]
    before = api_teacher.api_key_encrypted
    out = io.StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "Re-encrypted 1 API key(s)." in out.getvalue()
    api_teacher.refresh_from_db()
    assert api_teacher.api_key_encrypted != before
    settings.ENCRYPTION_KEYS = [new_key]  # the old key can now be dropped
    assert decrypt_secret(api_teacher.api_key_encrypted) == API_KEY
    assert services.teacher_api_key(api_teacher) == API_KEY


def test_rotation_reports_keys_that_no_configured_key_decrypts(settings, api_teacher) -> None:
    settings.ENCRYPTION_KEYS = [base64.urlsafe_b64encode(b"x" * 32).decode()]
    with pytest.raises(SecretDecryptionError):
        services.teacher_api_key(api_teacher)
    with pytest.raises(CommandError, match="1 key"):
        call_command("rotate_secrets", stdout=io.StringIO(), stderr=io.StringIO())
