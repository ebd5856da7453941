from __future__ import annotations

import pytest

from distillapp.projects.models import Project
from tests.inert_html import active_content

pytestmark = pytest.mark.django_db


def test_admin_creates_renames_and_deletes_a_project(alice_client, org):
    response = alice_client.post("/projects/new/", {"name": "Math tutor"})
    project = Project.objects.get(name="Math tutor")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    alice_client.post(
        f"/projects/{project.pk}/settings/", {"name": "Math tutor v2", "guidelines_md": "# Rules"}
    )
    project.refresh_from_db()
    assert project.name == "Math tutor v2" and project.guidelines_md == "# Rules"
    refused = alice_client.post(f"/projects/{project.pk}/delete/", {"confirm_name": "wrong"})
    assert refused.status_code == 422 and Project.objects.filter(pk=project.pk).exists()
    alice_client.post(f"/projects/{project.pk}/delete/", {"confirm_name": "Math tutor v2"})
    assert not Project.objects.filter(pk=project.pk).exists()


def test_duplicate_project_name_shows_inline_error(alice_client, project):
    response = alice_client.post("/projects/new/", {"name": project.name.upper()})
    assert response.status_code == 422
    assert b"already has a project" in response.content


def test_home_shows_empty_state_then_projects(alice_client, org):
    assert b"No projects yet" in alice_client.get("/").content
    alice_client.post("/projects/new/", {"name": "First"})
    assert b"First" in alice_client.get("/").content


def test_guidelines_markdown_is_sanitised(alice_client, project):
    project.guidelines_md = (
        "**bold** <script>alert(1)</script> [x](javascript:alert(1)) <img src=x onerror=alert(1)>"
    )
    project.save()
    body = alice_client.get(f"/projects/{project.pk}/").content.decode()
    guidelines = body[body.index('class="markdown"') :]
    guidelines = guidelines[: guidelines.index("</div>")]
    assert "<strong>bold</strong>" in guidelines
    assert active_content("<div " + guidelines) == []


def test_projects_api_crud(alice, org, api_client):
    client = api_client(alice)
    created = client.post(
        "/api/v1/projects",
        {"org_id": org.pk, "name": "API project"},
        content_type="application/json",
    )
    assert created.status_code == 201
    pid = created.json()["id"]
    assert [p["name"] for p in client.get("/api/v1/projects").json()] == ["API project"]
    patched = client.patch(
        f"/api/v1/projects/{pid}", {"guidelines_md": "hi"}, content_type="application/json"
    )
    assert patched.json()["guidelines_md"] == "hi"
    assert client.delete(f"/api/v1/projects/{pid}").status_code == 204
    assert client.get(f"/api/v1/projects/{pid}").status_code == 404


def test_projects_api_hides_other_orgs(alice, charlie, project, api_client):
    assert api_client(charlie).get("/api/v1/projects").json() == []
    response = api_client(charlie).post(
        "/api/v1/projects",
        {"org_id": project.org_id, "name": "intrude"},
        content_type="application/json",
    )
    assert response.status_code == 404


def test_projects_api_validates_input(alice, org, api_client):
    client = api_client(alice)
    empty = client.post(
        "/api/v1/projects", {"org_id": org.pk, "name": "  "}, content_type="application/json"
    )
    assert empty.status_code == 422 and empty.json()["detail"]
    garbage = client.post("/api/v1/projects", "not json", content_type="application/json")
    assert garbage.status_code in (400, 422) and "detail" in garbage.json()


def test_openapi_schema_is_served(alice, api_client):
    response = api_client(alice).get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/projects/{project_id}" in response.json()["paths"]
