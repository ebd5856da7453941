"""Writes of the evaluation app: eval sets (uploaded, held-out, shipped suites) and references.

Every eval set is eval-only: its items are EvalItem rows, never prompts, so no generation job or
dataset build can select them. All creating services are all-or-nothing (one transaction).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from distillapp.evaluation.models import EvalItem, EvalSet, EvalSetKind
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, PromptSet, Split
from distillapp.prompts.parsing import READERS, ErrorLog, FileProblem, detect_format

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITES = {EvalSetKind.CAPABILITY: "capability.jsonl", EvalSetKind.SAFETY: "safety.jsonl"}
MAX_ITEMS = 50_000
MAX_CATEGORY_CHARS = 100
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class EvalSetImportError(Exception):
    """An upload refused as a whole: the HTTP status to answer, a message, per-line errors."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or [{"line": None, "message": detail}]


@dataclass(frozen=True)
class _Item:
    external_id: str
    messages: list[dict[str, str]] | None
    text: str
    reference: str | None
    category: str
    must_refuse: bool | None
    source_prompt_id: int | None = None


def _clean_name(name: str, fallback: str) -> str:
    name = " ".join((name or "").split())[:200]
    return name or fallback[:200] or "Eval set"


def _category(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("category must be a string")
    text = str(value).strip()
    if len(text) > MAX_CATEGORY_CHARS or "\x00" in text:
        raise ValueError(f"category must be at most {MAX_CATEGORY_CHARS} characters")
    return text


def _must_refuse(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        lowered = value.strip().lower()
        return None if lowered == "" else lowered in _TRUE
    raise ValueError("must_refuse must be true or false")


def _create(
    *,
    project: Project,
    name: str,
    kind: str,
    items: Iterable[_Item],
    sha256: str,
    source_name: str = "",
    source_format: str = "",
    user: Any = None,
) -> EvalSet:
    rows = list(items)
    if not rows:
        raise EvalSetImportError(422, "The eval set has no items.")
    if len(rows) > MAX_ITEMS:
        raise EvalSetImportError(413, f"An eval set holds at most {MAX_ITEMS:,} items.")
    categories = Counter(r.category for r in rows if r.category)
    with transaction.atomic():
        eval_set = EvalSet.objects.create(
            project=project,
            name=name,
            kind=kind,
            source_name=source_name[:255],
            source_format=source_format,
            sha256=sha256,
            item_count=len(rows),
            reference_count=sum(1 for r in rows if r.reference),
            must_refuse_count=sum(1 for r in rows if r.must_refuse),
            categories=dict(sorted(categories.items())),
            created_by=user if getattr(user, "pk", None) else None,
        )
        EvalItem.objects.bulk_create(
            (
                EvalItem(
                    eval_set=eval_set,
                    project=project,
                    position=i,
                    external_id=r.external_id[:255],
                    messages=r.messages,
                    text=r.text,
                    reference=r.reference,
                    category=r.category,
                    must_refuse=r.must_refuse,
                    source_prompt_id=r.source_prompt_id,
                )
                for i, r in enumerate(rows, 1)
            ),
            batch_size=1000,
        )
    return eval_set


def _parse(fh: IO[bytes], source_name: str) -> tuple[str, list[_Item]]:
    """The items of an eval file, by the prompt importer's readers: `prompt` or `messages`,
    `reference`, `id`; `category` and `must_refuse` come from the columns the readers leave as
    metadata. Any problem refuses the whole file (422 with the lines)."""
    try:
        fmt = detect_format(source_name, fh.read(64))
    except FileProblem as exc:
        raise EvalSetImportError(exc.status, exc.detail) from None
    fh.seek(0)
    errors = ErrorLog()
    items: list[_Item] = []
    try:
        # threshold 0: nothing is drawn for the held-out split (eval items have no split).
        for row in READERS[fmt](fh, errors, mask=0, threshold=0):
            metadata = dict(row.metadata)
            try:
                category = _category(metadata.pop("category", None))
                must_refuse = _must_refuse(metadata.pop("must_refuse", None))
            except ValueError as exc:
                errors.add(row.position, str(exc))
                continue
            items.append(
                _Item(row.external_id, row.messages, row.text, row.reference, category, must_refuse)
            )
            if len(items) > MAX_ITEMS:
                raise EvalSetImportError(413, f"An eval set holds at most {MAX_ITEMS:,} items.")
    except FileProblem as exc:
        lines = [{"line": exc.line, "message": exc.detail}] if exc.line else None
        raise EvalSetImportError(exc.status, exc.detail, lines) from None
    if errors:
        raise EvalSetImportError(422, errors.items[0]["message"], errors.items)
    return fmt, items


def eval_set_upload(
    *,
    project: Project,
    file: Any,
    name: str = "",
    kind: str = EvalSetKind.UPLOADED,
    user: Any = None,
) -> EvalSet:
    """An uploaded eval set (JSONL, CSV or Parquet), eval-only. `kind` is uploaded, capability
    or safety (a user's own suite). Raises EvalSetImportError; not idempotent (each call adds
    a set)."""
    if kind not in (EvalSetKind.UPLOADED, EvalSetKind.CAPABILITY, EvalSetKind.SAFETY):
        raise EvalSetImportError(422, "kind must be uploaded, capability or safety.")
    source_name = str(getattr(file, "name", "") or "upload")
    size = int(getattr(file, "size", 0) or 0)
    limit = settings.PROMPT_UPLOAD_MAX_BYTES
    if size > limit:
        raise EvalSetImportError(413, f"The file is {size:,} bytes; the limit is {limit:,} bytes.")
    data = file.read(limit + 1)
    if len(data) > limit:
        raise EvalSetImportError(413, f"The file is larger than {limit:,} bytes.")
    if not data:
        raise EvalSetImportError(400, "The file is empty.")
    fmt, items = _parse(io.BytesIO(data), source_name)
    return _create(
        project=project,
        name=_clean_name(name, Path(source_name).stem),
        kind=kind,
        items=items,
        sha256=hashlib.sha256(data).hexdigest(),
        source_name=source_name,
        source_format=fmt,
        user=user,
    )


def eval_set_load_suite(
    *, project: Project, kind: str, user: Any = None, name: str = ""
) -> EvalSet:
    """One of the suites shipped in the repository (capability or safety) as a project eval set."""
    filename = SUITES.get(EvalSetKind(kind)) if kind in EvalSetKind.values else None
    if filename is None:
        raise EvalSetImportError(422, "Shipped suites are capability and safety.")
    path = SUITES_DIR / filename
    data = path.read_bytes()
    fmt, items = _parse(io.BytesIO(data), filename)
    label = EvalSetKind(kind).label
    return _create(
        project=project,
        name=_clean_name(name, f"{label} (shipped)"),
        kind=kind,
        items=items,
        sha256=hashlib.sha256(data).hexdigest(),
        source_name=filename,
        source_format=fmt,
        user=user,
    )


def eval_set_from_heldout(*, project: Project, user: Any = None, name: str = "") -> EvalSet:
    """The project's held-out prompts (with their references) as an eval set, copied now: later
    imports do not change it. The hash is over the items' canonical JSON."""
    set_ids = list(PromptSet.objects.filter(project=project).values_list("id", flat=True))
    prompts = (
        Prompt.objects.filter(prompt_set_id__in=set_ids, split=Split.HELDOUT)
        .order_by("prompt_set_id", "id")
        .values_list("id", "external_id", "messages", "text", "reference", "metadata")
    )
    items: list[_Item] = []
    digest = hashlib.sha256()
    for pk, external_id, messages, text, reference, metadata in prompts.iterator(chunk_size=2000):
        raw = metadata.get("category") if isinstance(metadata, dict) else None
        category = str(raw)[:MAX_CATEGORY_CHARS] if isinstance(raw, str | int) else ""
        item = _Item(external_id, messages, text, reference, category, None, pk)
        digest.update(
            json.dumps([messages, text, reference, category], sort_keys=True).encode() + b"\n"
        )
        items.append(item)
        if len(items) > MAX_ITEMS:
            raise EvalSetImportError(413, f"An eval set holds at most {MAX_ITEMS:,} items.")
    if not items:
        raise EvalSetImportError(422, "The project has no held-out prompts yet.")
    return _create(
        project=project,
        name=_clean_name(name, "Held-out prompts"),
        kind=EvalSetKind.HELDOUT,
        items=items,
        sha256=digest.hexdigest(),
        user=user,
    )


def eval_set_create(*, project: Project, kind: str, user: Any = None, name: str = "") -> EvalSet:
    """An eval set of a kind that needs no file: heldout, capability or safety."""
    if kind == EvalSetKind.HELDOUT:
        return eval_set_from_heldout(project=project, user=user, name=name)
    return eval_set_load_suite(project=project, kind=kind, user=user, name=name)


def eval_set_delete(*, eval_set: EvalSet) -> None:
    """Deletes the set and its items (idempotent for an already deleted set)."""
    EvalItem.objects.filter(eval_set_id=eval_set.pk).delete()
    EvalSet.objects.filter(pk=eval_set.pk).delete()


def _clean_reference(reference: str) -> str:
    text = (reference or "").strip()
    if not text:
        raise ValidationError({"reference": "A reference answer cannot be empty."})
    if "\x00" in text or len(text) > 200_000:
        raise ValidationError({"reference": "A reference is at most 200,000 characters, no NUL."})
    return text


def eval_item_reference_propose(*, item: EvalItem, reference: str) -> EvalItem:
    """Write (or rewrite) an item's reference; it is unverified until a human approves it."""
    item.reference = _clean_reference(reference)
    item.reference_verified_by = None
    item.reference_verified_at = None
    item.save(update_fields=["reference", "reference_verified_by", "reference_verified_at"])
    _recount(item.eval_set_id)
    return item


def eval_item_reference_approve(
    *, item: EvalItem, user: Any, reference: str | None = None
) -> EvalItem:
    """A human approves the item's reference (edited to `reference` when given): from now on it
    counts as verified. Approving again refreshes who and when; idempotent otherwise."""
    if reference is not None:
        item.reference = _clean_reference(reference)
    if not item.reference:
        raise ValidationError({"reference": "Write a reference before approving it."})
    item.reference_verified_by = user if getattr(user, "pk", None) else None
    item.reference_verified_at = timezone.now()
    item.save(update_fields=["reference", "reference_verified_by", "reference_verified_at"])
    _recount(item.eval_set_id)
    return item


def _recount(eval_set_id: int) -> None:
    count = (
        EvalItem.objects.filter(eval_set_id=eval_set_id, reference__isnull=False)
        .exclude(reference="")
        .count()
    )
    EvalSet.objects.filter(pk=eval_set_id).update(reference_count=count)
