from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _attempt(client: Client, username: str, password: str, ip: str = "10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_the_eleventh_wrong_password_for_a_user_is_refused_with_a_retry_time(alice):
    client = Client()
    for n in range(10):
        response = _attempt(client, "alice", f"wrong-{n}", ip=f"10.0.1.{n}")
        assert response.status_code == 200, f"attempt {n + 1} was refused"
        assert b"didn't match" in response.content
    refused = _attempt(client, "alice", "wrong-again", ip="10.0.2.1")
    assert refused.status_code == 429
    assert b"Too many failed logins. Try again in 60 seconds" in refused.content
    assert refused["Retry-After"] == "60"
    # Locked means locked: even the right password is refused until the cool-off ends.
    assert _attempt(Client(), "alice", "password", ip="10.0.3.1").status_code == 429


def test_the_eleventh_wrong_password_from_an_address_is_refused(alice, bob):
    client = Client()
    for n in range(10):
        assert _attempt(client, f"user{n}", "wrong", ip="10.9.9.9").status_code == 200
    assert _attempt(client, "bob", "wrong", ip="10.9.9.9").status_code == 429
    # Another address logs in normally.
    assert _attempt(Client(), "bob", "password", ip="10.9.9.10").status_code == 302


def test_a_few_mistakes_then_the_right_password_logs_in(alice):
    client = Client()
    for _ in range(3):
        _attempt(client, "alice", "wrong")
    assert _attempt(client, "alice", "password").status_code == 302
