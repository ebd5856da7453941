from __future__ import annotations

import pytest

from distillapp.accounts import services
from distillapp.accounts.models import AuditEvent, Membership, Role
from distillapp.projects.models import Project
from distillapp.projects.services import project_delete
from tests.conftest import login
from tests.factories import ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db


def _actions(org) -> list[str]:
    return list(AuditEvent.objects.filter(org=org).order_by("pk").values_list("action", flat=True))


def test_member_changes_are_recorded_with_actor_and_target(alice, org):
    client = login(alice)
    UserFactory(username="newbie")
    client.post(f"/orgs/{org.pk}/members/add/", {"username": "newbie", "role": "viewer"})
    client.post(f"/orgs/{org.pk}/members/newbie/role/", {"role": "reviewer"})
    client.post(f"/orgs/{org.pk}/members/newbie/remove/")
    assert _actions(org) == ["member.add", "member.role", "member.remove"]
    role_change = AuditEvent.objects.get(action="member.role")
    assert (role_change.actor, role_change.actor_name, role_change.target) == (
        alice,
        "alice",
        "newbie",
    )
    assert role_change.details == {"from": "viewer", "to": "reviewer"}


def test_a_refused_change_records_nothing(alice, adam, org):
    login(adam).post(f"/orgs/{org.pk}/members/alice/role/", {"role": "viewer"})
    assert Membership.objects.get(user=alice).role == Role.OWNER
    assert _actions(org) == []


def test_invitations_tokens_and_project_deletes_are_recorded(alice, org):
    client = login(alice)
    client.post(f"/orgs/{org.pk}/invitations/new/", {"role": "viewer", "days": "1"})
    invitation = org.invitations.get()
    client.post(f"/orgs/{org.pk}/invitations/{invitation.pk}/revoke/")
    client.post("/account/tokens/new/", {"name": "ci"})
    token = alice.api_tokens.get()
    client.post(f"/account/tokens/{token.pk}/revoke/")
    project = ProjectFactory(org=org, name="Doomed")
    client.post(f"/projects/{project.pk}/delete/", {"confirm_name": "Doomed"})
    assert not Project.objects.filter(pk=project.pk).exists()
    assert _actions(org) == ["invitation.create", "invitation.revoke", "project.delete"]
    personal = AuditEvent.objects.filter(org__isnull=True, actor=alice)
    assert list(personal.order_by("pk").values_list("action", "target")) == [
        ("token.create", "ci"),
        ("token.revoke", "ci"),
    ]


def test_owners_read_the_log_with_members_personal_events(alice, bob, org, charlie):
    services.api_token_create(user=bob, name="bob's script")
    services.api_token_create(user=charlie, name="charlie's script")
    project = ProjectFactory(org=org, name="Gone")
    project_delete(project=project, actor=alice)
    page = login(alice).get(f"/orgs/{org.pk}/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "project.delete" in html and "Gone" in html
    assert "bob&#x27;s script" in html
    assert "charlie" not in html
    assert b"Audit log" in login(alice).get(f"/orgs/{org.pk}/members/").content


def test_only_owners_read_the_log(adam, bob, charlie, org, api_client):
    for user in (adam, bob):
        assert login(user).get(f"/orgs/{org.pk}/audit/").status_code == 403
        assert api_client(user).get(f"/api/v1/orgs/{org.pk}/audit").status_code == 403
    assert login(charlie).get(f"/orgs/{org.pk}/audit/").status_code == 404
    assert b"Audit log" not in login(adam).get(f"/orgs/{org.pk}/members/").content


def test_audit_api_pages_newest_first(alice, org, api_client):
    owner = Membership.objects.get(user=alice)
    for _ in range(3):
        services.invitation_create(org=org, role=Role.VIEWER, actor_membership=owner)
    client = api_client(alice)  # creating this client's token adds a personal token.create event
    first = client.get(f"/api/v1/orgs/{org.pk}/audit?limit=2").json()
    assert [e["action"] for e in first] == ["token.create", "invitation.create"]
    assert first[0]["actor"] == "alice"
    rest = client.get(f"/api/v1/orgs/{org.pk}/audit?before={first[-1]['id']}").json()
    assert [e["action"] for e in rest] == ["invitation.create", "invitation.create"]
    assert rest[0]["details"]["role"] == "viewer"


def test_teacher_keys_and_deletes_name_the_user_of_the_request(alice, project):
    from distillapp.generation.models import Teacher
    from distillapp.generation.services.teachers import teacher_update
    from tests.factories import TeacherFactory

    teacher = TeacherFactory(project=project, name="Scribe", base_url="https://api.example.com/v1")
    teacher_update(teacher=teacher, api_key="sk-test-1234")
    teacher_update(teacher=teacher, api_key="")
    response = login(alice).post(f"/teachers/{teacher.pk}/delete/")
    assert response.status_code == 302
    assert not Teacher.objects.filter(pk=teacher.pk).exists()
    events = list(
        AuditEvent.objects.filter(org=project.org)
        .order_by("pk")
        .values_list("action", "actor_name", "target")
    )
    assert events == [
        ("teacher.key_set", "system", "Scribe"),
        ("teacher.key_remove", "system", "Scribe"),
        ("teacher.delete", "alice", "Scribe"),
    ]


def test_bulk_review_actions_are_recorded(alice, project):
    from distillapp.review.services import review_bulk_apply, review_bulk_undo, review_queue_sync
    from tests.factories import CompletionFactory, GenerationJobFactory, TeacherFactory

    job = GenerationJobFactory(project=project, teacher=TeacherFactory(project=project))
    CompletionFactory(job=job)
    CompletionFactory(job=job)
    review_queue_sync(project=project, force=True)
    action = review_bulk_apply(project=project, actor=alice, decision="approve")
    event = AuditEvent.objects.get(action="review.bulk_apply")
    assert (event.org, event.actor, event.details["count"]) == (project.org, alice, 2)
    assert event.details["bulk_action"] == action.pk
    review_bulk_undo(bulk_action=action)
    undo = AuditEvent.objects.get(action="review.bulk_undo")
    assert (undo.org, undo.details) == (project.org, {"bulk_action": action.pk, "restored": 2})


def test_prompt_set_deletes_are_recorded_but_not_each_set_of_a_deleted_project(alice, project):
    from distillapp.projects.services import project_delete
    from distillapp.prompts.services import prompt_set_delete
    from tests.factories import PromptSetFactory

    prompt_set_delete(prompt_set=PromptSetFactory(project=project, name="Old questions"))
    event = AuditEvent.objects.get(action="prompt_set.delete")
    assert (event.org, event.target) == (project.org, "Old questions")
    PromptSetFactory(project=project, name="Kept until the project goes")
    project_delete(project=project, actor=alice)
    assert AuditEvent.objects.filter(action="prompt_set.delete").count() == 1
    assert AuditEvent.objects.filter(action="project.delete").count() == 1
