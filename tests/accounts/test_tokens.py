from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command
from django.test import Client

from distillapp.accounts.models import ApiToken
from distillapp.accounts.services import api_token_create

pytestmark = pytest.mark.django_db


def test_token_is_stored_hashed_and_authenticates(alice):
    token, plain = api_token_create(user=alice, name="ci")
    assert (
        plain not in token.token_hash
        and token.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    )
    response = Client(HTTP_AUTHORIZATION=f"Bearer {plain}").get("/api/v1/orgs")
    assert response.status_code == 200
    assert response.json()[0]["name"] == "Acme"
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_wrong_or_missing_token_gets_401(alice):
    assert Client().get("/api/v1/orgs").status_code == 401
    assert Client(HTTP_AUTHORIZATION="Bearer dst_nope").get("/api/v1/orgs").status_code == 401


def test_token_created_in_the_ui_is_shown_once(alice_client, alice):
    response = alice_client.post("/account/tokens/new/", {"name": "laptop"})
    assert response.status_code == 200
    plain = response.context["new_token"]
    assert plain.encode() in response.content
    listing = alice_client.get("/account/tokens/")
    assert plain.encode() not in listing.content
    assert b"laptop" in listing.content
    assert Client(HTTP_AUTHORIZATION=f"Bearer {plain}").get("/api/v1/orgs").status_code == 200


def test_revoked_token_stops_working(alice_client, alice):
    token, plain = api_token_create(user=alice, name="old")
    response = alice_client.post(f"/account/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    assert Client(HTTP_AUTHORIZATION=f"Bearer {plain}").get("/api/v1/orgs").status_code == 401


def test_someone_elses_token_cannot_be_revoked(alice, charlie):
    token, plain = api_token_create(user=alice, name="mine")
    client = Client()
    client.force_login(charlie)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_apitoken_command_prints_a_working_token(alice, capsys):
    call_command("apitoken", "alice")
    plain = capsys.readouterr().out.strip()
    assert plain.startswith("dst_")
    assert Client(HTTP_AUTHORIZATION=f"Bearer {plain}").get("/api/v1/projects").status_code == 200


def test_apitoken_command_rejects_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user"):
        call_command("apitoken", "nobody")
