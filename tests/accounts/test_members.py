from __future__ import annotations

import pytest
from django.test import Client

from distillapp.accounts.models import Membership, Role
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_adds_a_member_by_username_and_sets_role(alice, adam):
    UserFactory(username="newbie")
    response = _client(adam).post(
        f"/orgs/{alice.memberships.get().org_id}/members/add/",
        {"username": "newbie", "role": "reviewer"},
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="newbie")
    assert membership.role == Role.REVIEWER
    _client(adam).post(f"/orgs/{membership.org_id}/members/newbie/role/", {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


def test_adding_an_unknown_user_says_so(alice_client, org):
    response = alice_client.post(
        f"/orgs/{org.pk}/members/add/", {"username": "ghost", "role": "viewer"}, follow=True
    )
    assert b"No user named" in response.content
    assert not Membership.objects.filter(user__username="ghost").exists()


def test_admin_cannot_make_an_owner(adam, org, api_client):
    UserFactory(username="newbie")
    response = api_client(adam).post(
        f"/api/v1/orgs/{org.pk}/members",
        {"username": "newbie", "role": "owner"},
        content_type="application/json",
    )
    assert response.status_code == 403


def test_last_owner_cannot_be_demoted(alice, org, api_client):
    response = api_client(alice).patch(
        f"/api/v1/orgs/{org.pk}/members/alice", {"role": "admin"}, content_type="application/json"
    )
    assert response.status_code == 422
    assert "at least one owner" in response.json()["detail"]


def test_members_api_lists_and_removes(alice, bob, org, api_client):
    client = api_client(alice)
    names = {m["username"] for m in client.get(f"/api/v1/orgs/{org.pk}/members").json()}
    assert names == {"alice", "bob"}
    assert client.delete(f"/api/v1/orgs/{org.pk}/members/bob").status_code == 204
    assert not Membership.objects.filter(user=bob).exists()


def test_viewer_cannot_add_members(vera, org, api_client):
    UserFactory(username="newbie")
    response = api_client(vera).post(
        f"/api/v1/orgs/{org.pk}/members",
        {"username": "newbie", "role": "viewer"},
        content_type="application/json",
    )
    assert response.status_code == 403


def test_user_in_two_orgs_switches_between_them(alice, other_org):
    Membership.objects.create(user=alice, org=other_org, role=Role.VIEWER)
    client = _client(alice)
    assert client.get("/").context["current_membership"].org.name == "Acme"
    client.post("/orgs/switch/", {"org_id": other_org.pk})
    assert client.get("/").context["current_membership"].org.name == "Globex"


def test_switching_to_a_foreign_org_is_refused(alice, other_org):
    client = _client(alice)
    response = client.post("/orgs/switch/", {"org_id": other_org.pk}, follow=True)
    assert b"not a member" in response.content
    assert client.get("/").context["current_membership"].org.name == "Acme"


def test_creating_an_org_makes_you_owner(alice, api_client):
    response = api_client(alice).post(
        "/api/v1/orgs", {"name": "Initech"}, content_type="application/json"
    )
    assert response.status_code == 201 and response.json()["role"] == "owner"
    duplicate = api_client(alice).post(
        "/api/v1/orgs", {"name": "initech"}, content_type="application/json"
    )
    assert duplicate.status_code == 422


def test_login_and_logout_through_the_forms(alice):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        "/login/", {"username": "alice", "password": "password", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    assert (
        client.post(
            "/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value}
        ).status_code
        == 302
    )
    assert client.get("/").status_code == 302


def test_posts_without_csrf_token_are_refused(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post("/projects/new/", {"name": "x"}).status_code == 403


def test_api_session_auth_requires_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post("/api/v1/orgs", {"name": "Sneaky"}, content_type="application/json")
    assert response.status_code in (401, 403)
