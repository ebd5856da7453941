"""Encryption of secrets at rest. MultiFernet: the first key encrypts, every key decrypts."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretDecryptionError(Exception):
    pass


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.ENCRYPTION_KEYS])


def encrypt_secret(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "The secret cannot be decrypted with the configured keys."
        ) from exc


def rotate_secret(token: str) -> str:
    """Re-encrypt a token under the first (current) key."""
    return _fernet().rotate(token.encode()).decode()
