from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from distillapp.accounts.models import AuditEvent
from tests.conftest import login
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_user_changes_their_password_and_stays_logged_in(alice):
    client = login(alice)
    assert client.get("/account/password/").status_code == 200
    response = client.post(
        "/account/password/",
        {
            "old_password": "password",
            "new_password": "a-new-secret",
            "new_password2": "a-new-secret",
        },
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("a-new-secret")
    assert client.get("/").status_code == 200  # this session survived the change
    assert AuditEvent.objects.filter(action="password.change", actor=alice).exists()


def test_a_wrong_current_password_changes_nothing(alice):
    response = login(alice).post(
        "/account/password/",
        {"old_password": "nope", "new_password": "a-new-secret", "new_password2": "a-new-secret"},
    )
    assert response.status_code == 422
    assert b"not your current password" in response.content
    alice.refresh_from_db()
    assert alice.check_password("password")


def test_createuser_reads_the_password_from_stdin_and_never_prints_it():
    out = io.StringIO()
    call_command(
        "createuser", "dora", "--password-stdin", stdin=io.StringIO("s3cret-enough\n"), stdout=out
    )
    assert get_user_model().objects.get(username="dora").check_password("s3cret-enough")
    assert "s3cret-enough" not in out.getvalue()
    assert "Created user dora" in out.getvalue()


def test_createuser_prints_a_generated_password_once():
    out = io.StringIO()
    call_command("createuser", "gen", "--generate", stdout=out)
    printed = out.getvalue().split("Password: ")[1].strip()
    assert get_user_model().objects.get(username="gen").check_password(printed)


def test_createuser_refuses_a_taken_name_and_a_short_password():
    UserFactory(username="dora")
    with pytest.raises(CommandError, match="already exists"):
        call_command(
            "createuser", "dora", "--password-stdin", stdin=io.StringIO("long-enough-pw\n")
        )
    with pytest.raises(CommandError, match="too short"):
        call_command("createuser", "ed", "--password-stdin", stdin=io.StringIO("short\n"))


def test_createuser_without_a_terminal_asks_for_a_flag():
    with pytest.raises(CommandError, match="--password-stdin"):
        call_command("createuser", "ed", stdin=io.StringIO(""))


def test_resetpassword_sets_and_audits_without_echo(alice):
    out = io.StringIO()
    call_command(
        "resetpassword",
        "alice",
        "--password-stdin",
        stdin=io.StringIO("fresh-secret-1\n"),
        stdout=out,
    )
    alice.refresh_from_db()
    assert alice.check_password("fresh-secret-1")
    assert "fresh-secret-1" not in out.getvalue()
    event = AuditEvent.objects.get(action="password.reset")
    assert (event.target, event.actor_name) == ("alice", "system")
    with pytest.raises(CommandError, match="No user"):
        call_command("resetpassword", "ghost", "--generate")
