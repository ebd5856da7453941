"""REST API of datasets and versions. GET and downloads: every member; create, build, cancel
and delete: admins and owners; outsiders 404. Errors use the API's `{detail, errors}` shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from ninja import Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from pydantic import Field

from distillapp.accounts.models import Role
from distillapp.datasets import downloads, selectors, services
from distillapp.datasets.models import Dataset, DatasetVersion
from distillapp.projects.access import get_project_for_user, get_scoped_object

router = Router(tags=["datasets"])


class DatasetIn(Schema):
    name: Annotated[str, Field(min_length=1, max_length=120)]
    description: Annotated[str, Field(max_length=4000)] = ""


class RecipeIn(Schema):
    """Every field is optional: an empty recipe takes every approved pair of every job."""

    jobs: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] = []
    include_unreviewed: bool = False
    min_judge_score: float | None = None
    per_prompt: Literal["all", "one"] = "all"
    reasoning: Literal["keep", "strip", "match_reference"] = "keep"
    dedupe: Literal["pair", "target"] = "pair"
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0


class VersionOut(Schema):
    id: int
    dataset_id: int
    number: int
    status: str
    message: str
    done: int
    total: int
    sha256: str
    recipe: dict[str, Any]
    counts: dict[str, Any]
    parent_id: int | None
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None
    files: dict[str, Any]


class VersionDetailOut(VersionOut):
    lineage: dict[str, Any]
    diff: dict[str, Any]


class DatasetOut(Schema):
    id: int
    project_id: int
    name: str
    description: str
    created_at: datetime


class DatasetDetailOut(DatasetOut):
    versions: list[VersionOut]


def dataset_out(d: Dataset) -> DatasetOut:
    return DatasetOut(
        id=d.pk,
        project_id=d.project_id,
        name=d.name,
        description=d.description,
        created_at=d.created_at,
    )


def _version_fields(v: DatasetVersion) -> dict[str, Any]:
    return {
        "id": v.pk,
        "dataset_id": v.dataset_id,
        "number": v.number,
        "status": v.status,
        "message": v.message,
        "done": v.done,
        "total": v.total,
        "sha256": v.sha256,
        "recipe": v.recipe,
        "counts": v.counts,
        "parent_id": v.parent_id,
        "created_by": v.created_by.username if v.created_by else None,
        "created_at": v.created_at,
        "finished_at": v.finished_at,
        "files": v.files,
    }


def _dataset(request: HttpRequest, dataset_id: int, role: str = Role.VIEWER) -> Dataset:
    dataset, _m = get_scoped_object(request.user, Dataset.objects.all(), dataset_id, role)
    return dataset


def _version(request: HttpRequest, version_id: int, role: str = Role.VIEWER) -> DatasetVersion:
    version, _m = get_scoped_object(
        request.user,
        DatasetVersion.objects.select_related("dataset", "created_by"),
        version_id,
        role,
    )
    return version


@router.get("/projects/{project_id}/datasets", response=list[DatasetOut])
def list_datasets(request: HttpRequest, project_id: int) -> list[DatasetOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [dataset_out(d) for d in selectors.datasets_for_project(project=project)]


@router.post("/projects/{project_id}/datasets", response={201: DatasetOut})
def create_dataset(request: HttpRequest, project_id: int, payload: DatasetIn) -> Status:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    dataset = services.dataset_create(
        project=project, name=payload.name, description=payload.description, user=request.user
    )
    return Status(201, dataset_out(dataset))


@router.get("/datasets/{dataset_id}", response=DatasetDetailOut)
def get_dataset(request: HttpRequest, dataset_id: int) -> DatasetDetailOut:
    dataset = _dataset(request, dataset_id)
    versions = [
        VersionOut(**_version_fields(v)) for v in selectors.dataset_versions(dataset=dataset)
    ]
    return DatasetDetailOut(**dataset_out(dataset).dict(), versions=versions)


@router.post("/datasets/{dataset_id}/versions", response={202: VersionOut})
def build_version(request: HttpRequest, dataset_id: int, payload: RecipeIn) -> Status:
    dataset = _dataset(request, dataset_id, Role.ADMIN)
    version = services.dataset_version_build(
        dataset=dataset, recipe=payload.dict(), user=request.user
    )
    return Status(202, VersionOut(**_version_fields(version)))


@router.get("/dataset-versions/{version_id}", response=VersionDetailOut)
def get_version(request: HttpRequest, version_id: int) -> VersionDetailOut:
    v = _version(request, version_id)
    return VersionDetailOut(**_version_fields(v), lineage=v.lineage, diff=v.diff)


@router.post("/dataset-versions/{version_id}/cancel", response=VersionOut)
def cancel_version(request: HttpRequest, version_id: int) -> VersionOut:
    v = services.dataset_version_cancel(version=_version(request, version_id, Role.ADMIN))
    return VersionOut(**_version_fields(v))


@router.post("/dataset-versions/{version_id}/resume", response={202: VersionOut})
def resume_version(request: HttpRequest, version_id: int) -> Status:
    """Build a failed or cancelled version again (422 for any other status)."""
    v = services.dataset_version_resume(version=_version(request, version_id, Role.ADMIN))
    return Status(202, VersionOut(**_version_fields(v)))


@router.delete("/dataset-versions/{version_id}", response={204: None})
def delete_version(request: HttpRequest, version_id: int) -> Status:
    services.dataset_version_delete(version=_version(request, version_id, Role.ADMIN))
    return Status(204, None)


@router.get("/dataset-versions/{version_id}/download")
def download_version(
    request: HttpRequest,
    version_id: int,
    format: Literal["jsonl", "parquet", "hf"] = "jsonl",  # noqa: A002 - the documented parameter
    split: Literal["train", "validation"] | None = None,
) -> HttpResponseBase:
    version = _version(request, version_id)
    try:
        return downloads.version_download(version=version, fmt=format, split=split)
    except downloads.NotDownloadable as exc:
        raise HttpError(409, str(exc)) from exc


def _add_completions() -> None:
    from distillapp.datasets.completions_api import router as completions_router

    router.add_router("", completions_router)


_add_completions()
