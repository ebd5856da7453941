"""REST API of eval sets. GET: every member; create, upload and delete: admins and owners;
approving a reference: reviewers and up; outsiders 404. Errors use the `{detail, errors}` shape."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from ninja import File, Form, Router, Schema, Status
from ninja.files import UploadedFile
from pydantic import Field

from distillapp.accounts.models import Role
from distillapp.evaluation import human_verdicts, reports, run_services, selectors, services
from distillapp.evaluation.models import EvalItem, EvalRun, EvalSet
from distillapp.projects.access import get_project_for_user, get_scoped_object

router = Router(tags=["evaluation"])


class EvalSetIn(Schema):
    kind: Literal["heldout", "capability", "safety"]
    name: Annotated[str, Field(max_length=200)] = ""


class ReferenceIn(Schema):
    """Approve the item's reference; with `reference`, approve that text instead (an edit)."""

    reference: Annotated[str, Field(min_length=1, max_length=200_000)] | None = None


class EvalSetOut(Schema):
    id: int
    project_id: int
    name: str
    kind: str
    source_name: str
    source_format: str
    sha256: str
    eval_only: bool
    item_count: int
    reference_count: int
    verified_count: int
    must_refuse_count: int
    categories: dict[str, int]
    created_by: str | None
    created_at: datetime


class EvalItemOut(Schema):
    id: int
    eval_set_id: int
    position: int
    external_id: str
    messages: list[dict[str, str]]
    text: str
    reference: str | None
    reference_verified: bool
    reference_verified_by: str | None
    reference_verified_at: datetime | None
    category: str
    must_refuse: bool | None


class EvalItemPageOut(Schema):
    items: list[EvalItemOut]
    next_cursor: str | None


def _error(status: int, detail: str, errors: list[dict[str, Any]] | None = None) -> HttpResponse:
    # This router must not import the API that mounts it (distillapp.api imports every router).
    return JsonResponse(
        {"detail": detail, "errors": errors or [{"line": None, "message": detail}]}, status=status
    )


def _set_out(s: EvalSet, verified: int | None = None) -> EvalSetOut:
    if verified is None:
        verified = getattr(s, "verified_count", None)
    if verified is None:
        verified = s.items.filter(reference_verified_at__isnull=False).count()
    return EvalSetOut(
        id=s.pk,
        project_id=s.project_id,
        name=s.name,
        kind=s.kind,
        source_name=s.source_name,
        source_format=s.source_format,
        sha256=s.sha256,
        eval_only=s.eval_only,
        item_count=s.item_count,
        reference_count=s.reference_count,
        verified_count=verified,
        must_refuse_count=s.must_refuse_count,
        categories=s.categories,
        created_by=s.created_by.username if s.created_by else None,
        created_at=s.created_at,
    )


def _item_out(i: EvalItem) -> EvalItemOut:
    return EvalItemOut(
        id=i.pk,
        eval_set_id=i.eval_set_id,
        position=i.position,
        external_id=i.external_id,
        messages=i.chat,
        text=i.text,
        reference=i.reference,
        reference_verified=i.reference_verified,
        reference_verified_by=(
            i.reference_verified_by.username if i.reference_verified_by else None
        ),
        reference_verified_at=i.reference_verified_at,
        category=i.category,
        must_refuse=i.must_refuse,
    )


def _eval_set(request: HttpRequest, eval_set_id: int, role: str = Role.VIEWER) -> EvalSet:
    eval_set, _m = get_scoped_object(
        request.user, EvalSet.objects.select_related("created_by"), eval_set_id, role
    )
    return eval_set


@router.get("/projects/{project_id}/eval-sets", response=list[EvalSetOut])
def list_eval_sets(request: HttpRequest, project_id: int) -> list[EvalSetOut]:
    project, _m = get_project_for_user(request.user, project_id)
    return [_set_out(s) for s in selectors.eval_sets_for_project(project=project)]


@router.post(
    "/projects/{project_id}/eval-sets",
    response={201: EvalSetOut},
    summary="Create an eval set from the held-out prompts or a shipped suite",
)
def create_eval_set(request: HttpRequest, project_id: int, payload: EvalSetIn) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    try:
        eval_set = services.eval_set_create(
            project=project, kind=payload.kind, name=payload.name, user=request.user
        )
    except services.EvalSetImportError as exc:
        return _error(exc.status, exc.detail, exc.errors)
    return Status(201, _set_out(eval_set, 0))


@router.post(
    "/projects/{project_id}/eval-sets/upload",
    response={201: EvalSetOut},
    summary="Upload an eval set (JSONL, CSV or Parquet)",
    description=(
        "Columns: `prompt` or `messages`, `reference`, optional `id`, `category`, `must_refuse`. "
        "Eval-only: never a prompt, never in a dataset. All or nothing. Errors: 400 bad content, "
        "413 too large, 415 unknown format, 422 row problems (`errors: [{line, message}]`)."
    ),
)
def upload_eval_set(
    request: HttpRequest,
    project_id: int,
    file: File[UploadedFile],
    name: Form[str] = "",
    kind: Form[Literal["uploaded", "capability", "safety"]] = "uploaded",
) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    try:
        eval_set = services.eval_set_upload(
            project=project, file=file, name=name, kind=kind, user=request.user
        )
    except services.EvalSetImportError as exc:
        return _error(exc.status, exc.detail, exc.errors)
    return Status(201, _set_out(eval_set, 0))


@router.get("/eval-sets/{eval_set_id}", response=EvalSetOut)
def get_eval_set(request: HttpRequest, eval_set_id: int) -> EvalSetOut:
    return _set_out(_eval_set(request, eval_set_id))


@router.delete("/eval-sets/{eval_set_id}", response={204: None})
def delete_eval_set(request: HttpRequest, eval_set_id: int) -> Status:
    services.eval_set_delete(eval_set=_eval_set(request, eval_set_id, Role.ADMIN))
    return Status(204, None)


@router.get("/eval-sets/{eval_set_id}/items", response=EvalItemPageOut)
def list_eval_items(
    request: HttpRequest,
    eval_set_id: int,
    cursor: str = "",
    limit: Annotated[int, Field(ge=1, le=selectors.MAX_PAGE)] = selectors.PAGE_SIZE,
) -> EvalItemPageOut:
    eval_set = _eval_set(request, eval_set_id)
    page = selectors.eval_set_items(eval_set=eval_set, cursor=cursor or None, limit=limit)
    return EvalItemPageOut(items=[_item_out(i) for i in page.items], next_cursor=page.next_cursor)


@router.post(
    "/eval-items/{eval_item_id}/review",
    response=EvalItemOut,
    summary="Approve an item's reference answer (optionally edited)",
)
def review_eval_item(request: HttpRequest, eval_item_id: int, payload: ReferenceIn) -> EvalItemOut:
    item, _m = get_scoped_object(
        request.user,
        EvalItem.objects.select_related("eval_set"),
        eval_item_id,
        Role.REVIEWER,
    )
    item = services.eval_item_reference_approve(
        item=item, user=request.user, reference=payload.reference
    )
    return _item_out(item)


# --- eval runs -------------------------------------------------------------------------------


class ModelChoiceIn(Schema):
    kind: Literal["teacher", "base_model", "student"]
    id: int
    artifact: Literal["", "adapter", "merged", "model", "quantized-int8"] = ""
    decoding: dict[str, Any] = {}


class DecodingIn(Schema):
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32768)] | None = None
    seed: int | None = None
    system_prompt: Annotated[str, Field(max_length=4000)] | None = None


class EvalRunIn(Schema):
    models: Annotated[list[ModelChoiceIn], Field(max_length=12)]
    eval_set_ids: Annotated[list[int], Field(max_length=50)]
    judge_teacher_id: int | None = None
    baseline_key: Annotated[str, Field(max_length=100)] = ""
    decoding: DecodingIn | None = None
    criteria: Annotated[str, Field(max_length=4000)] = ""
    name: Annotated[str, Field(max_length=200)] = ""


class EvalRunOut(Schema):
    id: int
    project_id: int
    name: str
    status: str
    stage: str
    done: int
    total: int
    message: str
    models: list[dict[str, Any]]
    eval_set_ids: list[int]
    baseline_key: str
    judge: dict[str, Any]
    decoding: dict[str, Any]
    lineage: dict[str, Any]
    results: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EvalAnswerOut(Schema):
    model_key: str
    ok: bool
    text: str
    error: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    cost_usd: str


class EvalJudgementOut(Schema):
    model_key: str
    outcome: float | None
    candidate_first: str
    baseline_first: str
    rationale_candidate_first: str
    rationale_baseline_first: str
    error: str


class EvalSampleOut(Schema):
    item: EvalItemOut
    contaminated: bool
    ngrams: list[str]
    answers: list[EvalAnswerOut]
    judgements: list[EvalJudgementOut]


class EvalSamplePageOut(Schema):
    samples: list[EvalSampleOut]
    next_cursor: str | None


class ErrorOut(Schema):
    detail: str
    errors: list[dict[str, Any]]


def _run_out(run: EvalRun, *, has_verdicts: bool | None = None) -> EvalRunOut:
    return EvalRunOut(
        id=run.pk,
        project_id=run.project_id,
        name=run.name,
        status=run.status,
        stage=run.stage,
        done=run.done,
        total=run.total,
        message=run.message,
        models=[
            {k: v for k, v in s.items() if k not in ("path", "adapter")} for s in run.model_specs
        ],
        eval_set_ids=sorted(s.pk for s in run.eval_sets.all()),
        baseline_key=run.baseline_key,
        judge={k: v for k, v in (run.judge or {}).items() if k != "system_prompt"},
        decoding=run.decoding,
        lineage=run.lineage,
        # Reviewers' verdicts arrive after scoring: agreement is read live, not as stored.
        results=(
            {
                **run.results,
                "agreement": human_verdicts.judge_human_agreement(
                    run=run, has_verdicts=has_verdicts
                ),
            }
            if run.results
            else {}
        ),
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _eval_run(request: HttpRequest, eval_run_id: int, role: str = Role.VIEWER) -> EvalRun:
    run, _m = get_scoped_object(request.user, EvalRun.objects.all(), eval_run_id, role)
    return run


@router.get("/projects/{project_id}/eval-runs", response=list[EvalRunOut])
def list_eval_runs(request: HttpRequest, project_id: int) -> list[EvalRunOut]:
    project, _m = get_project_for_user(request.user, project_id)
    runs = list(
        selectors.eval_runs_for_project(project=project).prefetch_related("eval_sets")[:200]
    )
    reviewed = human_verdicts.runs_with_verdicts(runs)
    return [_run_out(r, has_verdicts=r.pk in reviewed) for r in runs]


@router.post(
    "/projects/{project_id}/eval-runs",
    response={201: EvalRunOut, 422: ErrorOut},
    summary="Start an eval run: models × eval sets, optionally judged against a teacher",
    description=(
        "`models`: `{kind: teacher|base_model|student, id, artifact}` (a student is a training "
        "run's `adapter`, `merged` or `quantized-int8` artefact). Same `decoding` for all unless "
        "a model's own `decoding` overrides it. The judge (an API teacher) compares every model "
        "with the baseline (default: the first teacher) in both orders."
    ),
)
def create_eval_run(request: HttpRequest, project_id: int, payload: EvalRunIn) -> Any:
    project, _m = get_project_for_user(request.user, project_id, Role.ADMIN)
    run = run_services.eval_run_create(
        project=project,
        models=[
            run_services.ModelChoice(kind=m.kind, id=m.id, artifact=m.artifact, decoding=m.decoding)
            for m in payload.models
        ],
        eval_set_ids=payload.eval_set_ids,
        judge_teacher_id=payload.judge_teacher_id,
        baseline_key=payload.baseline_key,
        decoding=payload.decoding.dict(exclude_none=True) if payload.decoding else None,
        criteria=payload.criteria,
        name=payload.name,
        user=request.user,
    )
    return Status(201, _run_out(run))


@router.get("/eval-runs/{eval_run_id}", response=EvalRunOut)
def get_eval_run(request: HttpRequest, eval_run_id: int) -> EvalRunOut:
    return _run_out(_eval_run(request, eval_run_id))


@router.post("/eval-runs/{eval_run_id}/cancel", response={200: EvalRunOut, 422: ErrorOut})
def cancel_eval_run(request: HttpRequest, eval_run_id: int) -> Any:
    run = run_services.eval_run_cancel(run=_eval_run(request, eval_run_id, Role.ADMIN))
    return _run_out(run)


@router.post("/eval-runs/{eval_run_id}/resume", response={200: EvalRunOut, 422: ErrorOut})
def resume_eval_run(request: HttpRequest, eval_run_id: int) -> Any:
    run = run_services.eval_run_resume(run=_eval_run(request, eval_run_id, Role.ADMIN))
    return _run_out(run)


class HumanVerdictIn(Schema):
    item_id: int
    model_key: str = Field(max_length=100)
    preferred: Literal["candidate", "tie", "baseline"]


class HumanVerdictOut(Schema):
    item_id: int
    model_key: str
    preferred: str
    agreement: dict[str, Any]


@router.post(
    "/eval-runs/{eval_run_id}/review/verdicts",
    response={200: HumanVerdictOut, 422: ErrorOut},
    summary="Say which answer of a pair is better: a model's or the baseline's (reviewers)",
    description=(
        "Your own verdict on one item of a judged run (`candidate` = the model's answer, "
        "`baseline` = the baseline's, or `tie`); sending it again changes it. The reply carries "
        "the judge–human agreement (Cohen's kappa over every reviewer verdict of the run)."
    ),
)
def set_human_verdict(request: HttpRequest, eval_run_id: int, payload: HumanVerdictIn) -> Any:
    run = _eval_run(request, eval_run_id, Role.REVIEWER)
    verdict = human_verdicts.eval_human_verdict_set(
        run=run,
        item_id=payload.item_id,
        model_key=payload.model_key,
        preferred=payload.preferred,
        user=request.user,
    )
    return HumanVerdictOut(
        item_id=verdict.item_id,
        model_key=verdict.model_key,
        preferred=verdict.preferred,
        agreement=human_verdicts.judge_human_agreement(run=run),
    )


@router.get("/eval-runs/{eval_run_id}/samples", response=EvalSamplePageOut)
def list_eval_samples(
    request: HttpRequest,
    eval_run_id: int,
    cursor: str = "",
    limit: Annotated[int, Field(ge=1, le=selectors.MAX_PAGE)] = selectors.PAGE_SIZE,
    category: Annotated[str, Field(max_length=100)] = "",
    contaminated: Literal["", "yes", "no"] = "",
    outcome: Literal["", "win", "loss", "tie"] = "",
    model_key: Annotated[str, Field(max_length=100)] = "",
) -> EvalSamplePageOut:
    run = _eval_run(request, eval_run_id)
    page = selectors.eval_run_samples(
        run=run,
        cursor=cursor or None,
        limit=limit,
        category=category,
        contaminated=contaminated,
        outcome=outcome,
        model_key=model_key,
    )
    return EvalSamplePageOut(
        samples=[
            EvalSampleOut(
                item=_item_out(s.item),
                contaminated=s.contaminated,
                ngrams=s.ngrams,
                answers=[
                    EvalAnswerOut(
                        model_key=a.model_key,
                        ok=a.ok,
                        text=a.text,
                        error=a.error,
                        prompt_tokens=a.prompt_tokens,
                        completion_tokens=a.completion_tokens,
                        latency_ms=a.latency_ms,
                        cost_usd=str(a.cost_usd),
                    )
                    for a in s.answers.values()
                ],
                judgements=[
                    EvalJudgementOut(
                        model_key=j.model_key,
                        outcome=j.outcome,
                        candidate_first=j.candidate_first,
                        baseline_first=j.baseline_first,
                        rationale_candidate_first=j.rationale_candidate_first,
                        rationale_baseline_first=j.rationale_baseline_first,
                        error=j.error,
                    )
                    for j in s.judgements.values()
                ],
            )
            for s in page.samples
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/eval-runs/{eval_run_id}/report.html",
    response={200: str},
    openapi_extra={
        "responses": {
            200: {
                "description": "The report",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        }
    },
    summary="The self-contained HTML report (a download; opens offline)",
)
def eval_run_report(request: HttpRequest, eval_run_id: int) -> HttpResponse:
    run = _eval_run(request, eval_run_id)
    response = HttpResponse(reports.report_html(run), content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="eval-run-{run.pk}-report.html"'
    return response


@router.get(
    "/eval-runs/{eval_run_id}/results.json",
    response=dict[str, Any],
    summary="Results in lm-evaluation-harness's shape (results, configs, versions)",
)
def eval_run_results(request: HttpRequest, eval_run_id: int) -> HttpResponse:
    run = _eval_run(request, eval_run_id)
    response = JsonResponse(reports.results_json(run), json_dumps_params={"indent": 1})
    response["Content-Disposition"] = f'attachment; filename="eval-run-{run.pk}-results.json"'
    return response


@router.get(
    "/eval-runs/{eval_run_id}/samples.jsonl",
    response={200: str},
    openapi_extra={
        "responses": {
            200: {
                "description": "One JSON line per answer",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            }
        }
    },
    summary="Every answer with its judgement, one JSON line each (streamed)",
)
def eval_run_samples_jsonl(request: HttpRequest, eval_run_id: int) -> StreamingHttpResponse:
    run = _eval_run(request, eval_run_id)
    response = StreamingHttpResponse(
        reports.samples_jsonl(run), content_type="application/x-ndjson"
    )
    response["Content-Disposition"] = f'attachment; filename="eval-run-{run.pk}-samples.jsonl"'
    return response
