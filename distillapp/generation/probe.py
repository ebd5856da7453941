"""`teacher_test`: send one prompt to a teacher and report the answer or the exact error.

Nothing is stored and no job starts. API teachers are called synchronously with the real `openai`
client (no retries, a short timeout). Local teachers are loaded and run in a subprocess on the CPU
(the web process never imports torch) when their weights are small enough; bigger ones are checked
on disk only and the result says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from distillapp.core.outbound import outbound_client, validate_outbound_url
from distillapp.core.paths import ModelPathRefused, check_model_path
from distillapp.generation.models import Teacher, TeacherKind
from distillapp.generation.services import teacher_api_key
from workers.engine.outbound import OutboundRefused

DEFAULT_PROMPT = "Say hello in one short sentence."
API_TEST_TIMEOUT = 20.0
LOCAL_TEST_TIMEOUT = 120.0


@dataclass
class TeacherTestResult:
    ok: bool
    text: str = ""
    error: str = ""
    latency_ms: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def _describe_api_error(exc: BaseException, base_url: str, model: str, timeout: float) -> str:
    """A short message with the status and our own reason, never the endpoint's body: the guarded
    client has already replaced it by `<status> <reason> (<error code>)` (workers/engine/outbound)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"Timed out after {timeout:g} s waiting for {base_url}."
    if isinstance(exc, openai.APIConnectionError):
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OutboundRefused):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            return f"Refused to connect to {base_url}: {cause}"
        return f"Could not connect to {base_url}."
    if isinstance(exc, openai.APIStatusError):
        reason = _reason(exc)
        if isinstance(exc, openai.AuthenticationError):
            return f"{reason}: the API key was refused."
        if isinstance(exc, openai.NotFoundError):
            return f"404 Not found: unknown model {model!r} or wrong base URL ({reason})."
        return reason
    return f"The request failed ({type(exc).__name__})."


def _reason(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("type") == "upstream_error" and err.get("message"):
            return str(err["message"])[:200]
    return f"HTTP {exc.status_code}"


def _test_api(teacher: Teacher, prompt: str, timeout: float) -> TeacherTestResult:
    import openai

    from workers.engine.teachers.openai_runner import build_messages

    decoding = teacher.decoding or {}
    try:
        validate_outbound_url(teacher.base_url)
    except ValidationError as exc:
        return TeacherTestResult(ok=False, error=" ".join(exc.messages))
    client = openai.OpenAI(
        base_url=teacher.base_url,
        api_key=teacher_api_key(teacher) or "not-needed",
        max_retries=0,
        timeout=timeout,
        http_client=outbound_client(timeout=timeout),
    )
    params: dict[str, Any] = {
        "model": teacher.model,
        "messages": build_messages(
            [{"role": "user", "content": prompt}], decoding.get("system_prompt") or ""
        ),
        "max_tokens": min(int(decoding.get("max_tokens") or 64), 64),
    }
    if decoding.get("temperature") is not None:
        params["temperature"] = decoding["temperature"]
    started = time.perf_counter()
    try:
        resp = client.chat.completions.create(**params)
        latency_ms = int((time.perf_counter() - started) * 1000)
        choice = resp.choices[0]
        usage = resp.usage
        return TeacherTestResult(
            ok=True,
            text=choice.message.content or "",
            latency_ms=latency_ms,
            details={
                "finish_reason": choice.finish_reason,
                "prompt_tokens": getattr(usage, "prompt_tokens", None),
                "completion_tokens": getattr(usage, "completion_tokens", None),
                "model": getattr(resp, "model", teacher.model),
            },
        )
    except Exception as exc:  # noqa: BLE001 - the point is to show it
        return TeacherTestResult(
            ok=False,
            error=_describe_api_error(exc, teacher.base_url, teacher.model, timeout),
            latency_ms=int((time.perf_counter() - started) * 1000),
        )
    finally:
        client.close()


def _test_local(teacher: Teacher, prompt: str) -> TeacherTestResult:
    from workers.engine.generate_local import model_fingerprint, weights_size

    try:
        folder = check_model_path(teacher.model_path, org_id=teacher.project.org_id)
    except ModelPathRefused as exc:
        # The same answer whether or not the path exists: probing the host's disk learns nothing.
        return TeacherTestResult(ok=False, error=str(exc))
    if not folder.is_dir():
        return TeacherTestResult(
            ok=False, error=f"The folder {teacher.model_path} does not exist on the web host."
        )
    if not (folder / "config.json").is_file():
        return TeacherTestResult(
            ok=False,
            error=f"No config.json in {teacher.model_path}: not a transformers model folder.",
        )
    fingerprint = model_fingerprint(teacher.model_path)
    size = weights_size(teacher.model_path)
    details = {"fingerprint": fingerprint, "weights_bytes": size}
    if size == 0:
        return TeacherTestResult(
            ok=False,
            error=f"No weights (*.safetensors or *.bin) in {teacher.model_path}.",
            details=details,
        )
    if size > settings.LOCAL_TEACHER_TEST_MAX_BYTES:
        return TeacherTestResult(
            ok=True,
            text="",
            details={
                **details,
                "note": (
                    f"The folder looks complete ({size / 1024**3:.1f} GiB of weights), too large to load in the "
                    "web process; launch a small job to try it on a GPU worker."
                ),
            },
        )
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "workers.engine.generate_local",
                "--probe",
                teacher.model_path,
                "--prompt",
                prompt,
                "--max-new-tokens",
                "8",
                "--device",
                "cpu",
            ],
            capture_output=True,
            text=True,
            timeout=LOCAL_TEST_TIMEOUT,
            cwd=str(settings.BASE_DIR),
        )
    except subprocess.TimeoutExpired:
        return TeacherTestResult(
            ok=False,
            error=f"Loading and running the model took over {LOCAL_TEST_TIMEOUT:g} s.",
            details=details,
        )
    latency_ms = int((time.perf_counter() - started) * 1000)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return TeacherTestResult(
            ok=False,
            error=f"The model could not be run: {tail[0]}",
            latency_ms=latency_ms,
            details=details,
        )
    data = json.loads(lines[-1])
    if not data.get("ok"):
        return TeacherTestResult(
            ok=False, error=str(data.get("error")), latency_ms=latency_ms, details=details
        )
    return TeacherTestResult(
        ok=True,
        text=data.get("text", ""),
        latency_ms=latency_ms,
        details={
            **details,
            "finish_reason": data.get("finish_reason"),
            "completion_tokens": data.get("completion_tokens"),
        },
    )


def teacher_test(
    *, teacher: Teacher, prompt: str = "", timeout: float | None = None
) -> TeacherTestResult:
    prompt = (prompt or "").strip()[:4000] or DEFAULT_PROMPT
    if teacher.kind == TeacherKind.HF_LOCAL:
        return _test_local(teacher, prompt)
    return _test_api(
        teacher, prompt, timeout or min(API_TEST_TIMEOUT, float(settings.TEACHER_REQUEST_TIMEOUT))
    )
