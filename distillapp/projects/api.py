from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status

from distillapp.accounts.access import get_org_for_user
from distillapp.accounts.models import Role
from distillapp.projects import services
from distillapp.projects.access import get_project_for_user
from distillapp.projects.models import Project
from distillapp.projects.selectors import projects_for_user

router = Router(tags=["projects"])


class ProjectOut(Schema):
    id: int
    org_id: int
    name: str
    guidelines_md: str
    created_at: datetime


class ProjectIn(Schema):
    org_id: int
    name: str
    guidelines_md: str = ""


class ProjectPatch(Schema):
    name: str | None = None
    guidelines_md: str | None = None


def _out(p: Project) -> ProjectOut:
    return ProjectOut(
        id=p.pk,
        org_id=p.org_id,
        name=p.name,
        guidelines_md=p.guidelines_md,
        created_at=p.created_at,
    )


@router.get("/projects", response=list[ProjectOut])
def list_projects(request: HttpRequest, org_id: int | None = None) -> list[ProjectOut]:
    return [_out(p) for p in projects_for_user(request.user, org_id)]


@router.post("/projects", response={201: ProjectOut})
def create_project(request: HttpRequest, payload: ProjectIn) -> Status:
    org, _m = get_org_for_user(request.user, payload.org_id, Role.ADMIN)
    project = services.project_create(
        org=org, name=payload.name, guidelines_md=payload.guidelines_md, created_by=request.user
    )
    return Status(201, _out(project))


@router.get("/projects/{project_id}", response=ProjectOut)
def get_project(request: HttpRequest, project_id: int) -> ProjectOut:
    project, _m = get_project_for_user(request.user, project_id)
    return _out(project)


@router.patch("/projects/{project_id}", response=ProjectOut)
def patch_project(request: HttpRequest, project_id: int, payload: ProjectPatch) -> ProjectOut:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    return _out(
        services.project_update(
            project=project, name=payload.name, guidelines_md=payload.guidelines_md
        )
    )


@router.delete("/projects/{project_id}", response={204: None})
def delete_project(request: HttpRequest, project_id: int) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    services.project_delete(project=project, actor=request.user)
    return Status(204, None)
