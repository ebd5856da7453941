"""The app side of the LLM judge: a judge client for one of the project's teachers."""

from __future__ import annotations

from typing import Any

from distillapp.core.outbound import outbound_policy
from distillapp.core.paths import check_model_path
from workers.engine.judge import JudgeClient, LocalJudgeClient


def client_for_teacher(
    teacher: Any, *, rubric: str, concurrency: int, timeout: float
) -> JudgeClient | LocalJudgeClient:
    """A judge client for a `generation.Teacher`: OpenAI-compatible (its key decrypted here only)
    or a local model folder."""
    from distillapp.core.crypto import decrypt_secret
    from distillapp.generation.models import TeacherKind

    if teacher.kind == TeacherKind.HF_LOCAL:
        # Checked when saved; checked again where it loads (roots can change). Raises
        # ModelPathRefused, which fails the filter run with the refusal.
        check_model_path(teacher.model_path, org_id=teacher.project.org_id)
        return LocalJudgeClient(
            model_path=teacher.model_path,
            rubric=rubric,
            device=teacher.device or "auto",
            dtype=teacher.dtype or "auto",
            batch_size=teacher.batch_size or 8,
        )

    api_key = decrypt_secret(teacher.api_key_encrypted) if teacher.api_key_encrypted else "none"
    return JudgeClient(
        base_url=teacher.base_url,
        api_key=api_key,
        model=teacher.model,
        rubric=rubric,
        concurrency=min(concurrency, max(1, teacher.concurrency)),
        timeout=timeout,
        outbound=outbound_policy(),
    )
