"""The LLM judge: asks a project teacher to score a completion from 1 to 10.

Runs inside the filters task. An OpenAI-compatible teacher is called through the real `openai`
client with bounded concurrency (a thread pool), on the `default` worker. A local (`hf_local`)
teacher is loaded on the worker that runs the task, which is then a `gpu` worker (see
`distillapp.filters.services.filters_queue`), and judges in batches, greedily. Either way a
failure on one item becomes that item's error and leaves its score empty, so one bad reply never
fails the whole run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

SYSTEM_PROMPT = (
    "You are a strict, fair grader of AI assistant answers. Follow the rubric. "
    'Reply with a JSON object only: {"score": <integer 1-10>, "rationale": "<one or two sentences>"}.'
)
MAX_RATIONALE = 2000


@dataclass(frozen=True)
class JudgeItem:
    key: int
    prompt: str
    completion: str


@dataclass(frozen=True)
class JudgeResult:
    key: int
    score: float | None
    rationale: str
    error: str = ""


class JudgeParseError(ValueError):
    pass


_FRACTION = re.compile(r"(?<![\d.])(10|[1-9](?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE)
_SCORE_WORD = re.compile(r"score\W{0,3}(10|[1-9](?:\.\d+)?)(?![\d])", re.IGNORECASE)
_INTEGER = re.compile(r"(?<![\d.])(\d+)(?!\d|\.\d)")


def _valid(score: Any) -> float | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= 10 else None


def parse_judgement(text: str) -> tuple[float, str]:
    """(score 1–10, rationale) from a judge reply. JSON first (also inside ``` fences or prose),
    then 'score: 7' / '7/10', then the first integer. Raises JudgeParseError if none is 1–10.
    """
    text = (text or "").strip()
    if not text:
        raise JudgeParseError("The judge sent an empty reply.")
    for candidate in re.findall(r"\{.*?\}", text, re.DOTALL) + re.findall(
        r"\{.*\}", text, re.DOTALL
    ):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and "score" in data:
            score = _valid(data["score"])
            if score is None:
                raise JudgeParseError(f"The judge gave a score outside 1–10: {data['score']!r}.")
            rationale = str(data.get("rationale") or data.get("reason") or "").strip()
            return score, (rationale or text)[:MAX_RATIONALE]
    for pattern in (_FRACTION, _SCORE_WORD, _INTEGER):
        match = pattern.search(text)
        if match:
            score = _valid(match.group(1))
            if score is not None:
                return score, text[:MAX_RATIONALE]
            if pattern is _INTEGER:
                break
    raise JudgeParseError(f"No score from 1 to 10 in the judge's reply: {text[:200]!r}.")


def build_messages(*, rubric: str, prompt: str, completion: str) -> list[dict[str, str]]:
    user = (
        f"Rubric:\n{rubric}\n\n"
        f"<prompt>\n{prompt}\n</prompt>\n\n"
        f"<answer>\n{completion}\n</answer>\n\n"
        "Score the answer with the rubric. Reply with the JSON object only."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


class JudgeClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        rubric: str,
        concurrency: int = 4,
        timeout: float = 60,
        max_tokens: int = 400,
    ) -> None:
        import openai

        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or "none", max_retries=2, timeout=timeout
        )
        self.model = model
        self.rubric = rubric
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens

    def judge_one(self, item: JudgeItem) -> JudgeResult:
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=build_messages(
                    rubric=self.rubric, prompt=item.prompt, completion=item.completion
                ),  # type: ignore[arg-type]
                temperature=0,
                max_tokens=self.max_tokens,
            )
            content = reply.choices[0].message.content if reply.choices else ""
            score, rationale = parse_judgement(content or "")
        except Exception as exc:  # noqa: BLE001 - any failure is this item's error, not the run's
            return JudgeResult(item.key, None, "", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        return JudgeResult(item.key, score, rationale)

    def judge_many(
        self, items: Iterable[JudgeItem], on_result: Callable[[JudgeResult], None] | None = None
    ) -> list[JudgeResult]:
        results: list[JudgeResult] = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            futures = [pool.submit(self.judge_one, item) for item in items]
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results

    def close(self) -> None:
        self.client.close()


class LocalJudgeClient:
    """The judge on a local model folder: the same prompt as JudgeClient, greedy decoding, in
    batches of the teacher's batch size. Needs torch (ML extra): only ever built on a worker."""

    def __init__(
        self,
        *,
        model_path: str,
        rubric: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_tokens: int = 200,
    ) -> None:
        from workers.engine import generate_local

        self._gl = generate_local
        self.lm = generate_local.load(model_path, device=device, dtype=dtype)
        self.rubric = rubric
        self.batch_size = max(1, batch_size)
        self.settings = generate_local.LocalSettings(max_new_tokens=max_tokens, temperature=0.0)

    def judge_many(
        self, items: Iterable[JudgeItem], on_result: Callable[[JudgeResult], None] | None = None
    ) -> list[JudgeResult]:
        gl = self._gl
        requests = (
            gl.LocalRequest(
                key=item.key,
                messages=build_messages(
                    rubric=self.rubric, prompt=item.prompt, completion=item.completion
                ),
            )
            for item in items
        )
        results: list[JudgeResult] = []

        def on_batch(batch: list[Any]) -> None:
            for generated in batch:
                try:
                    score, rationale = parse_judgement(generated.text)
                    result = JudgeResult(generated.key, score, rationale)
                except JudgeParseError as exc:
                    result = JudgeResult(generated.key, None, "", error=str(exc))
                results.append(result)
                if on_result is not None:
                    on_result(result)

        gl.generate_all(
            self.lm, requests, self.settings, batch_size=self.batch_size, on_batch=on_batch
        )
        return results

    def close(self) -> None:
        self.lm = None  # type: ignore[assignment]


def client_for_teacher(
    teacher: Any, *, rubric: str, concurrency: int, timeout: float
) -> JudgeClient | LocalJudgeClient:
    """A judge client for a `generation.Teacher`: OpenAI-compatible (its key decrypted here only)
    or a local model folder."""
    from distillapp.core.crypto import decrypt_secret
    from distillapp.generation.models import TeacherKind

    if teacher.kind == TeacherKind.HF_LOCAL:
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
    )
