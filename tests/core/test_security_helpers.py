from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from distillapp.core.crypto import (
    SecretDecryptionError,
    decrypt_secret,
    encrypt_secret,
    rotate_secret,
)
from distillapp.core.cursor import InvalidCursor, decode_cursor, encode_cursor
from distillapp.core.markdown import render_markdown
from tests.inert_html import active_content

PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '<a href="javascript:alert(1)">x</a>',
    "[click](javascript:alert(1))",
    '<div hx-get="/evil" hx-trigger="load">x</div>',
    '<svg onload="alert(1)"><circle/></svg>',
    "<iframe src=//evil></iframe>",
    "![x](javascript:alert(1))",
    '<a href="data:text/html,<script>alert(1)</script>">d</a>',
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_markdown_strips_active_content(payload):
    assert active_content(str(render_markdown(payload))) == []


def test_inert_check_would_catch_active_content():
    assert active_content(
        '<img src=x onerror="x()"><a href="javascript:x()">a</a><div hx-get="/e"></div>'
    )


def test_markdown_keeps_code_blocks_and_formatting():
    html = str(render_markdown("# Title\n\n```python\nprint('<b>')\n```\n\n**ok**"))
    assert "<h1>Title</h1>" in html and "<strong>ok</strong>" in html
    assert "&lt;b&gt;" in html and '<code class="language-python">' in html


def test_secrets_round_trip_and_rotate(settings):
    old = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    token = encrypt_secret("sk-live-123")
    assert "sk-live" not in token
    new = Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [new, old]
    assert decrypt_secret(token) == "sk-live-123"
    rotated = rotate_secret(token)
    settings.ENCRYPTION_KEYS = [new]
    assert decrypt_secret(rotated) == "sk-live-123"
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(token)


def test_cursors_are_signed():
    assert decode_cursor(encode_cursor(42)) == 42
    assert decode_cursor(None) is None
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(42)[:-2] + "xx")
