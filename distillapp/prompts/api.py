"""Prompt sets over the REST API: upload (multipart), list, read, delete, browse prompts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import File, Form, Router, Schema, Status
from ninja.files import UploadedFile

from distillapp.accounts.models import Role
from distillapp.projects.access import get_project_for_user, get_scoped_object
from distillapp.prompts import selectors, services
from distillapp.prompts.models import Prompt, PromptSet, Split

router = Router(tags=["prompts"])


class ImportOut(Schema):
    id: int
    name: str
    imported: int
    duplicates_dropped: int
    heldout: int


class PromptSetOut(Schema):
    id: int
    project_id: int
    name: str
    source_name: str
    source_format: str
    sha256: str
    size_bytes: int
    heldout_fraction: float
    seed: int
    total_count: int
    train_count: int
    heldout_count: int
    duplicates_dropped: int
    # PostgreSQL fills search vectors after the import; until then search is slower, never partial.
    search_indexed: bool
    search_indexed_count: int
    created_at: datetime


class PromptOut(Schema):
    id: int
    position: int
    external_id: str
    messages: list[dict[str, Any]]
    text: str
    reference: str | None
    metadata: dict[str, Any]
    split: str


class PromptPageOut(Schema):
    items: list[PromptOut]
    next_cursor: str | None


def _error(
    request: HttpRequest, status: int, detail: str, errors: list[dict[str, Any]] | None = None
) -> HttpResponse:
    # A plain JSON response in the API's error shape: this router must not import the API that
    # mounts it (distillapp.api imports every app's router).
    return JsonResponse(
        {"detail": detail, "errors": errors or [{"line": None, "message": detail}]}, status=status
    )


def _set_out(ps: PromptSet) -> PromptSetOut:
    return PromptSetOut(
        id=ps.pk,
        project_id=ps.project_id,
        name=ps.name,
        source_name=ps.source_name,
        source_format=ps.source_format,
        sha256=ps.sha256,
        size_bytes=ps.size_bytes,
        heldout_fraction=ps.heldout_fraction,
        seed=ps.seed,
        total_count=ps.total_count,
        search_indexed=ps.search_indexed,
        search_indexed_count=ps.search_indexed_count,
        train_count=ps.train_count,
        heldout_count=ps.heldout_count,
        duplicates_dropped=ps.duplicates_dropped,
        created_at=ps.created_at,
    )


def _prompt_out(p: Prompt) -> PromptOut:
    return PromptOut(
        id=p.pk,
        position=p.position,
        external_id=p.external_id,
        messages=p.chat,
        text=p.text,
        reference=p.reference,
        metadata=p.metadata,
        split=p.split,
    )


@router.post(
    "/projects/{project_id}/prompt-sets",
    response={201: ImportOut},
    summary="Upload a prompt set (JSONL, CSV or Parquet)",
    description=(
        "All or nothing. Errors: 400 bad content, 413 too large, 415 unknown format, 422 schema or "
        "parameter problems; body `{detail, errors: [{line, message}]}`."
    ),
)
def upload_prompt_set(
    request: HttpRequest,
    project_id: int,
    file: File[UploadedFile],
    name: Form[str],
    heldout_fraction: Form[str] = "0.1",
    seed: Form[str] = "",
) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    try:
        result = services.prompt_set_import(
            project=project,
            file=file,
            name=name,
            heldout_fraction=services.clean_fraction(heldout_fraction or "0.1"),
            seed=services.clean_seed(seed) if seed.strip() else None,
            created_by=request.user,
        )
    except services.PromptImportError as exc:
        return _error(request, exc.status, exc.detail, exc.errors)
    ps = result.prompt_set
    return Status(
        201,
        ImportOut(
            id=ps.pk,
            name=ps.name,
            imported=result.imported,
            duplicates_dropped=result.duplicates_dropped,
            heldout=result.heldout,
        ),
    )


@router.get("/projects/{project_id}/prompt-sets", response=list[PromptSetOut])
def list_prompt_sets(request: HttpRequest, project_id: int) -> list[PromptSetOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [_set_out(ps) for ps in selectors.prompt_sets_for_project(project=project)]


@router.get("/prompt-sets/{prompt_set_id}", response=PromptSetOut)
def get_prompt_set(request: HttpRequest, prompt_set_id: int) -> PromptSetOut:
    ps, _m = get_scoped_object(request.user, PromptSet.objects.all(), prompt_set_id)
    return _set_out(ps)


@router.delete("/prompt-sets/{prompt_set_id}", response={204: None})
def delete_prompt_set(request: HttpRequest, prompt_set_id: int) -> Any:
    ps, _m = get_scoped_object(request.user, PromptSet.objects.all(), prompt_set_id, Role.ADMIN)
    try:
        services.prompt_set_delete(prompt_set=ps)
    except services.PromptSetInUse as exc:
        return _error(request, 409, str(exc))
    return Status(204, None)


@router.get("/prompt-sets/{prompt_set_id}/prompts", response=PromptPageOut)
def list_prompts(
    request: HttpRequest,
    prompt_set_id: int,
    cursor: str = "",
    q: str = "",
    split: str = "",
    meta_key: str = "",
    meta_value: str = "",
    limit: int = selectors.PAGE_SIZE,
) -> Any:
    ps, _m = get_scoped_object(request.user, PromptSet.objects.all(), prompt_set_id)
    if split and split not in Split.values:
        return _error(request, 422, 'split must be "train" or "heldout".')
    if meta_value and not meta_key:
        return _error(request, 422, "meta_value needs meta_key.")
    page = selectors.prompt_set_prompts(
        prompt_set=ps,
        cursor=cursor or None,
        q=q,
        split=split or None,
        meta_key=meta_key or None,
        meta_value=meta_value or None,
        limit=limit,
    )
    return PromptPageOut(items=[_prompt_out(p) for p in page.items], next_cursor=page.next_cursor)
