from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone

from distillapp.accounts import services
from distillapp.accounts.models import Invitation, Membership, Role
from tests.conftest import login
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _invite(org, role=Role.REVIEWER, days=None):
    actor = Membership.objects.get(org=org, role=Role.OWNER)
    return services.invitation_create(org=org, role=role, actor_membership=actor, days=days)


def _token_from_page(html: str) -> str:
    start = html.index('id="invitation-link">') + len('id="invitation-link">')
    link = html[start : html.index("</pre>", start)]
    return parse_qs(urlparse(link).query)["token"][0]


def test_admin_creates_a_link_shown_once_and_only_its_hash_is_stored(alice, adam, org):
    response = login(adam).post(f"/orgs/{org.pk}/invitations/new/", {"role": "viewer", "days": "3"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = _token_from_page(response.content.decode())
    invitation = Invitation.objects.get()
    assert invitation.role == Role.VIEWER
    assert invitation.token_hash == services.hash_token(token)
    assert token not in str(Invitation.objects.values().get())
    assert timedelta(days=2, hours=23) < invitation.expires_at - timezone.now() <= timedelta(days=3)
    again = login(adam).get(f"/orgs/{org.pk}/members/").content.decode()
    assert token not in again
    assert "Revoke" in again


def test_a_stranger_signs_up_through_the_link_and_lands_in_the_org(alice, org):
    _inv, token = _invite(org, Role.REVIEWER)
    client = Client()
    page = client.get(f"/invite/?token={token}")
    assert page.status_code == 200
    assert b"Join Acme" in page.content
    response = client.post(
        "/invite/",
        {
            "token": token,
            "username": "nina",
            "password": "a-long-secret",
            "password2": "a-long-secret",
        },
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="nina")
    assert (membership.org, membership.role) == (org, Role.REVIEWER)
    home = client.get("/")
    assert home.context["current_membership"].org == org
    assert home.wsgi_request.user.username == "nina"


def test_the_link_works_once(alice, org):
    _inv, token = _invite(org)
    Client().post(
        "/invite/",
        {
            "token": token,
            "username": "nina",
            "password": "a-long-secret",
            "password2": "a-long-secret",
        },
    )
    second = Client().post(
        "/invite/",
        {
            "token": token,
            "username": "otto",
            "password": "a-long-secret",
            "password2": "a-long-secret",
        },
    )
    assert second.status_code == 404
    assert not get_user_model().objects.filter(username="otto").exists()
    with pytest.raises(ValidationError):
        services.invitation_accept(token=token, user=UserFactory(username="paul"))


def test_a_logged_in_user_accepts(alice, charlie, org):
    _inv, token = _invite(org, Role.VIEWER)
    client = login(charlie)
    assert b"Join Acme" in client.get(f"/invite/?token={token}").content
    assert client.post("/invite/", {"token": token}).status_code == 302
    assert Membership.objects.get(user=charlie, org=org).role == Role.VIEWER


def test_a_member_cannot_use_up_an_invitation(alice, bob, org):
    invitation, token = _invite(org, Role.ADMIN)
    response = login(bob).post("/invite/", {"token": token})
    assert response.status_code == 422
    assert b"already a member" in response.content
    invitation.refresh_from_db()
    assert invitation.accepted_at is None
    assert Membership.objects.get(user=bob, org=org).role == Role.REVIEWER


def test_revoked_and_expired_links_do_not_work(alice, org):
    revoked, revoked_token = _invite(org)
    login(alice).post(f"/orgs/{org.pk}/invitations/{revoked.pk}/revoke/")
    expired, expired_token = _invite(org)
    Invitation.objects.filter(pk=expired.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    for token in (revoked_token, expired_token, "inv_made-up"):
        page = Client().get(f"/invite/?token={token}")
        assert page.status_code == 404
        assert b"not valid any more" in page.content
        response = Client().post(
            "/invite/",
            {
                "token": token,
                "username": "nina",
                "password": "a-long-secret",
                "password2": "a-long-secret",
            },
        )
        assert response.status_code == 404
    assert not get_user_model().objects.filter(username="nina").exists()


def test_signup_errors_keep_the_invitation(alice, org):
    invitation, token = _invite(org)
    response = Client().post(
        "/invite/", {"token": token, "username": "alice", "password": "short", "password2": "short"}
    )
    assert response.status_code == 422
    assert b"already exists" in response.content
    response = Client().post(
        "/invite/", {"token": token, "username": "nina", "password": "short", "password2": "short"}
    )
    assert response.status_code == 422
    assert b"too short" in response.content
    invitation.refresh_from_db()
    assert invitation.accepted_at is None


def test_only_owners_invite_owners(alice, adam, org):
    adam_membership = Membership.objects.get(user=adam)
    with pytest.raises(PermissionDenied):
        services.invitation_create(org=org, role=Role.OWNER, actor_membership=adam_membership)
    _inv, token = _invite(org, Role.OWNER)
    assert Invitation.objects.filter(role=Role.OWNER).count() == 1
    assert token.startswith("inv_")


def test_expiry_is_bounded(alice, org):
    with pytest.raises(ValidationError):
        _invite(org, days=0)
    with pytest.raises(ValidationError):
        _invite(org, days=31)


def test_viewers_and_reviewers_cannot_invite(bob, vera, org):
    for user in (bob, vera):
        assert (
            login(user).post(f"/orgs/{org.pk}/invitations/new/", {"role": "viewer"}).status_code
            == 403
        )
    assert not Invitation.objects.exists()


def test_invitations_api_lists_creates_and_revokes(alice, org, api_client):
    client = api_client(alice)
    created = client.post(
        f"/api/v1/orgs/{org.pk}/invitations",
        {"role": "viewer", "days": 2},
        content_type="application/json",
    )
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "viewer" and body["token"].startswith("inv_")
    assert body["url"].endswith(f"/invite/?token={body['token']}")
    listed = client.get(f"/api/v1/orgs/{org.pk}/invitations").json()
    assert [i["id"] for i in listed] == [body["id"]]
    assert "token" not in listed[0]
    assert client.delete(f"/api/v1/orgs/{org.pk}/invitations/{body['id']}").status_code == 204
    assert client.get(f"/api/v1/orgs/{org.pk}/invitations").json() == []
    assert services.invitation_pending(token=body["token"]) is None


def test_invitations_api_is_for_admins(vera, charlie, org, api_client):
    assert api_client(vera).get(f"/api/v1/orgs/{org.pk}/invitations").status_code == 403
    assert (
        api_client(charlie)
        .post(
            f"/api/v1/orgs/{org.pk}/invitations",
            {"role": "viewer"},
            content_type="application/json",
        )
        .status_code
        == 404
    )


def test_open_signup_is_off_unless_enabled(db, settings):
    assert Client().get("/signup/").status_code == 404
    assert b"Ask an owner or admin" in Client().get("/login/").content
    settings.OPEN_SIGNUP = True
    client = Client()
    assert b"Sign up" in client.get("/login/").content
    response = client.post(
        "/signup/", {"username": "sam", "password": "a-long-secret", "password2": "a-long-secret"}
    )
    assert response.status_code == 302
    assert get_user_model().objects.get(username="sam").check_password("a-long-secret")
    assert not Membership.objects.filter(user__username="sam").exists()
