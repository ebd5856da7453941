"""Writes of teachers: create, update (one validation for both), delete, keys, snapshots."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from distillapp.accounts.services import audit_record
from distillapp.core.crypto import decrypt_secret, encrypt_secret
from distillapp.core.outbound import validate_outbound_url
from distillapp.core.paths import ModelPathRefused, check_model_path
from distillapp.generation.decoding import decoding_clean, decoding_merge
from distillapp.generation.models import ACTIVE_STATUSES, GenerationJob, Teacher, TeacherKind

if TYPE_CHECKING:
    from distillapp.projects.models import Project

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "float16", "bfloat16")
_UNSET: Any = object()
# The columns' limits: values past them are refused here, never by the database.
_MAX_INT = 2_147_483_647
_MAX_PRICE = Decimal("999999.999999")
_PRICE_STEP = Decimal("0.000001")
_MAX_LENGTHS = {"name": 120, "base_url": 500, "model": 200, "model_path": 1000}


def _price(errors: dict[str, list[str]], key: str, value: Any) -> Decimal:
    try:
        price = Decimal(str(value if value not in (None, "") else 0))
    except (InvalidOperation, ValueError):
        errors[key] = ["Enter a price in dollars per million tokens."]
        return Decimal(0)
    if not price.is_finite() or price < 0 or price > _MAX_PRICE:
        errors[key] = ["The price must be between 0 and 999,999 dollars per million tokens."]
        return Decimal(0)
    return price.quantize(_PRICE_STEP)


def _optional_positive(
    errors: dict[str, list[str]], key: str, value: Any, *, hi: int
) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors[key] = ["Enter a whole number."]
        return None
    if not 1 <= number <= hi:
        errors[key] = [f"Enter a number between 1 and {hi:,}."]
        return None
    return number


def _validate_teacher(teacher: Teacher) -> None:
    """One validation for create and update (UI and API alike). Every field is checked whatever
    the kind, so no value ever reaches a database constraint."""
    errors: dict[str, list[str]] = {}
    teacher.name = (teacher.name or "").strip()
    if not teacher.name:
        errors["name"] = ["Give the teacher a name."]
    if teacher.kind not in TeacherKind.values:
        errors["kind"] = ["Choose openai or hf_local."]
    for key, limit in _MAX_LENGTHS.items():
        value = getattr(teacher, key) or ""
        if len(value) > limit:
            errors[key] = [f"At most {limit:,} characters."]
        elif "\x00" in value:
            errors[key] = ["NUL characters are not allowed."]
    if not 1 <= int(teacher.concurrency or 0) <= 1024:
        errors["concurrency"] = ["Concurrency must be between 1 and 1,024."]
    if not 1 <= int(teacher.batch_size or 0) <= 1024:
        errors["batch_size"] = ["Batch size must be between 1 and 1,024."]
    if teacher.device not in DEVICES:
        errors["device"] = ["Device must be auto, cpu or cuda."]
    if teacher.dtype not in DTYPES:
        errors["dtype"] = [f"dtype must be one of {', '.join(DTYPES)}."]
    if teacher.kind == TeacherKind.OPENAI:
        teacher.base_url = (teacher.base_url or "").strip().rstrip("/")
        scheme, _, rest = teacher.base_url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.strip("/"):
            errors["base_url"] = ["Enter the endpoint's base URL, e.g. https://api.openai.com/v1."]
        elif "base_url" not in errors:
            # The same guard the clients use when they connect (docs/security.md).
            try:
                validate_outbound_url(teacher.base_url, field="base_url")
            except ValidationError as exc:
                errors.update(exc.message_dict)
        if not (teacher.model or "").strip():
            errors["model"] = ["Enter the model name the endpoint serves."]
    elif teacher.kind == TeacherKind.HF_LOCAL:
        teacher.model_path = (teacher.model_path or "").strip()
        if not teacher.model_path:
            errors["model_path"] = ["Enter the folder that holds the model and its tokenizer."]
        elif "model_path" not in errors:
            try:
                check_model_path(teacher.model_path, org_id=teacher.project.org_id)
            except ModelPathRefused as exc:
                errors["model_path"] = [str(exc)]
    try:
        teacher.decoding = decoding_clean(teacher.decoding)
    except ValidationError as exc:
        for key, messages in exc.message_dict.items():
            errors.setdefault(key, []).extend(messages)
    duplicate = Teacher.objects.filter(project_id=teacher.project_id, name=teacher.name).exclude(
        pk=teacher.pk
    )
    if teacher.name and duplicate.exists():
        errors["name"] = ["A teacher with this name already exists in the project."]
    if errors:
        raise ValidationError(errors)


def _set_api_key(teacher: Teacher, api_key: str) -> None:
    api_key = (api_key or "").strip()
    if api_key or teacher.api_key_encrypted:  # a key is set, replaced or removed
        audit_record(
            org=teacher.project.org,
            actor=None,
            action="teacher.key_set" if api_key else "teacher.key_remove",
            target=teacher.name,
            details={"last4": api_key[-4:]},
        )
    teacher.api_key_encrypted = encrypt_secret(api_key) if api_key else ""
    teacher.api_key_last4 = api_key[-4:] if api_key else ""


def teacher_create(
    *,
    project: Project,
    name: str,
    kind: str,
    base_url: str = "",
    model: str = "",
    api_key: str = "",
    model_path: str = "",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 16,
    concurrency: int = 16,
    requests_per_minute: int | str | None = None,
    tokens_per_minute: int | str | None = None,
    price_input_per_m: Decimal | str | float | None = 0,
    price_output_per_m: Decimal | str | float | None = 0,
    decoding: dict[str, Any] | None = None,
) -> Teacher:
    """Create a teacher; its API key is stored encrypted, with only the last 4 characters in clear."""
    errors: dict[str, list[str]] = {}
    teacher = Teacher(
        project=project,
        name=name,
        kind=kind,
        base_url=base_url,
        model=(model or "").strip(),
        model_path=model_path,
        device=device or "auto",
        dtype=dtype or "auto",
        batch_size=_int_or(batch_size, 16),
        concurrency=_int_or(concurrency, 16),
        requests_per_minute=_optional_positive(
            errors, "requests_per_minute", requests_per_minute, hi=10**7
        ),
        tokens_per_minute=_optional_positive(
            errors, "tokens_per_minute", tokens_per_minute, hi=_MAX_INT
        ),
        price_input_per_m=_price(errors, "price_input_per_m", price_input_per_m),
        price_output_per_m=_price(errors, "price_output_per_m", price_output_per_m),
        decoding=decoding or {},
    )
    try:
        _validate_teacher(teacher)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)
    _set_api_key(teacher, api_key)
    try:
        teacher.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"name": ["A teacher with this name already exists in the project."]}
        ) from exc
    return teacher


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return -1  # rejected by validation with a clear message


def teacher_update(
    *,
    teacher: Teacher,
    name: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    model_path: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | str | None = None,
    concurrency: int | str | None = None,
    requests_per_minute: Any = _UNSET,
    tokens_per_minute: Any = _UNSET,
    price_input_per_m: Any = None,
    price_output_per_m: Any = None,
    decoding: dict[str, Any] | None = None,
) -> Teacher:
    """Change a teacher. None leaves a field as it is; `api_key=""` removes the key.

    Jobs keep their own snapshot, so edits never rewrite what a job ran with.
    """
    errors: dict[str, list[str]] = {}
    for field, value in (
        ("name", name),
        ("base_url", base_url),
        ("model", model),
        ("model_path", model_path),
        ("device", device),
        ("dtype", dtype),
    ):
        if value is not None:
            setattr(teacher, field, value.strip() if isinstance(value, str) else value)
    if batch_size is not None:
        teacher.batch_size = _int_or(batch_size, 16)
    if concurrency is not None:
        teacher.concurrency = _int_or(concurrency, 16)
    if requests_per_minute is not _UNSET:
        teacher.requests_per_minute = _optional_positive(
            errors, "requests_per_minute", requests_per_minute, hi=10**7
        )
    if tokens_per_minute is not _UNSET:
        teacher.tokens_per_minute = _optional_positive(
            errors, "tokens_per_minute", tokens_per_minute, hi=_MAX_INT
        )
    if price_input_per_m is not None:
        teacher.price_input_per_m = _price(errors, "price_input_per_m", price_input_per_m)
    if price_output_per_m is not None:
        teacher.price_output_per_m = _price(errors, "price_output_per_m", price_output_per_m)
    if decoding is not None:
        teacher.decoding = decoding
    try:
        _validate_teacher(teacher)
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        teacher.refresh_from_db()
        raise ValidationError(errors)
    if api_key is not None:
        _set_api_key(teacher, api_key)
    teacher.save()
    return teacher


def teacher_delete(*, teacher: Teacher) -> None:
    """Delete a teacher. Refused while one of its jobs is active; finished jobs keep their snapshot."""
    if GenerationJob.objects.filter(teacher=teacher, status__in=ACTIVE_STATUSES).exists():
        raise ValidationError("This teacher has a job that is still running. Cancel it first.")
    audit_record(
        org=teacher.project.org,
        actor=None,
        action="teacher.delete",
        target=teacher.name,
        details={"teacher": teacher.pk},
    )
    teacher.delete()


def teacher_api_key(teacher: Teacher) -> str:
    return decrypt_secret(teacher.api_key_encrypted) if teacher.api_key_encrypted else ""


def teacher_rotate_key(*, teacher: Teacher) -> bool:
    """Re-encrypt the API key with the current (first) key. True when a key was rewritten."""
    from cryptography.fernet import InvalidToken

    from distillapp.core.crypto import SecretDecryptionError, rotate_secret

    if not teacher.api_key_encrypted:
        return False
    try:
        rotated = rotate_secret(teacher.api_key_encrypted)
    except InvalidToken as exc:
        raise SecretDecryptionError("No configured key decrypts this secret.") from exc
    Teacher.objects.filter(pk=teacher.pk, api_key_encrypted=teacher.api_key_encrypted).update(
        api_key_encrypted=rotated
    )
    teacher.api_key_encrypted = rotated
    return True


def teacher_snapshot(
    *, teacher: Teacher, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The frozen copy a job runs with. Never holds the API key (only its last 4 characters)."""
    snapshot: dict[str, Any] = {
        "teacher_id": teacher.pk,
        "name": teacher.name,
        "kind": teacher.kind,
        "decoding": decoding_merge(teacher.decoding, overrides),
        "overrides": dict(overrides or {}),
        "taken_at": timezone.now().isoformat(),
    }
    if teacher.kind == TeacherKind.OPENAI:
        snapshot.update(
            base_url=teacher.base_url,
            model=teacher.model,
            api_key_last4=teacher.api_key_last4,
            concurrency=teacher.concurrency,
            requests_per_minute=teacher.requests_per_minute,
            tokens_per_minute=teacher.tokens_per_minute,
            price_input_per_m=str(teacher.price_input_per_m),
            price_output_per_m=str(teacher.price_output_per_m),
        )
    else:
        from workers.engine.generate_local import model_fingerprint

        snapshot.update(
            model_path=teacher.model_path,
            model=teacher.model or teacher.model_path.rstrip("/").rsplit("/", 1)[-1],
            device=teacher.device,
            dtype=teacher.dtype,
            batch_size=teacher.batch_size,
            # The web host may not see the GPU host's disk: the worker fills it in at first claim.
            fingerprint=model_fingerprint(teacher.model_path),
        )
    return snapshot
