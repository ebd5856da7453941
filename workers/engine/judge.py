"""The LLM judge: asks a project teacher to score a completion from 1 to 10.

Django-free: `distillapp.filters.judge` builds a client from a project's teacher. An
OpenAI-compatible teacher is called through the real `openai` client with bounded concurrency (a
thread pool), on the `default` worker. A local (`hf_local`) teacher is loaded on the worker that
runs the filter run, which is then a `gpu` worker, and judges in batches, greedily. Either way a
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

from workers.engine.outbound import OutboundPolicy, sync_client

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
    # The raw reply (truncated) when it could not be read: kept on the item for people to see.
    reply: str = ""


class JudgeParseError(ValueError):
    """The reply is not the JSON object asked for; `reply` keeps (the start of) what was sent."""

    def __init__(self, message: str, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply[:MAX_REPLY]


# The judge's answer as a JSON schema, sent as `response_format` where the endpoint supports it.
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "rationale": {"type": "string"},
    },
    "required": ["score", "rationale"],
    "additionalProperties": False,
}
RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "judgement", "strict": True, "schema": RESPONSE_SCHEMA},
}
# How much of an unreadable reply is kept on the item, for people to see what the judge said.
MAX_REPLY = 2000
_FENCE = re.compile(r"\A```(?:json|JSON)?[ \t]*\n(.*?)\n?```\Z", re.DOTALL)


def reply_object(text: str, field: str) -> dict[str, Any]:
    """The JSON object a judge reply must be (or one ```json fence holding it), with `field` in
    it; anything else raises JudgeParseError carrying the raw reply."""
    raw = text or ""
    body = raw.strip()
    if not body:
        raise JudgeParseError("The judge sent an empty reply.", raw)
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        data = json.loads(body)
    except ValueError:
        raise JudgeParseError("The judge's reply is not the JSON object asked for.", raw) from None
    if not isinstance(data, dict) or field not in data:
        raise JudgeParseError(f'The judge\'s reply has no "{field}" field.', raw)
    return data


def rationale_of(data: dict[str, Any]) -> str:
    rationale = data.get("rationale")
    return rationale.strip()[:MAX_RATIONALE] if isinstance(rationale, str) else ""


def parse_judgement(text: str) -> tuple[float, str]:
    """(score 1–10, rationale) from a judge reply, strictly: the whole reply must be a JSON
    object (or one ```json fence holding it) whose `score` is a number from 1 to 10.

    Anything else raises JudgeParseError with the raw reply: no number is ever read out of prose,
    which may be the prompt or the rubric echoed back ("from 1 (useless) to 10").
    """
    data = reply_object(text, "score")
    score = data["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 10:
        raise JudgeParseError(f"The judge gave no score from 1 to 10: {score!r}.", text or "")
    return float(score), rationale_of(data)


def result_from_reply(key: int, reply: str) -> JudgeResult:
    """A reply as a result: its score, or an error that keeps the raw reply (never a score)."""
    try:
        score, rationale = parse_judgement(reply)
    except JudgeParseError as exc:
        return JudgeResult(key, None, "", error=str(exc), reply=exc.reply)
    return JudgeResult(key, score, rationale)


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
        outbound: OutboundPolicy | None = None,
    ) -> None:
        import openai

        # The judge's URL is user-given: the guarded client (None: DISTILLERY_OUTBOUND_ALLOW).
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "none",
            max_retries=2,
            timeout=timeout,
            http_client=sync_client(outbound, timeout=timeout),
        )
        self.model = model
        self.rubric = rubric
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens

    # Whether the endpoint takes `response_format`: None until a call tells, False once it
    # refused it (HTTP 400) and the same request without it went through; kept for the run.
    structured_output: bool | None = None

    def _create(self, item: JudgeItem, *, structured: bool) -> Any:
        extra: dict[str, Any] = {"response_format": RESPONSE_FORMAT} if structured else {}
        return self.client.chat.completions.create(
            model=self.model,
            messages=build_messages(
                rubric=self.rubric, prompt=item.prompt, completion=item.completion
            ),  # type: ignore[arg-type]
            temperature=0,
            max_tokens=self.max_tokens,
            **extra,
        )

    def _ask(self, item: JudgeItem) -> Any:
        """The judge's reply, with the JSON schema as `response_format` unless this endpoint
        refused it. A 400 before any structured call succeeded is retried once without it; if
        that works, the endpoint does not take response_format and is no longer sent it."""
        import openai

        if self.structured_output is False:
            return self._create(item, structured=False)
        try:
            reply = self._create(item, structured=True)
        except openai.BadRequestError:
            if self.structured_output:
                raise  # the endpoint takes response_format: the 400 is this item's own
            reply = self._create(item, structured=False)
            self.structured_output = False
            return reply
        self.structured_output = True
        return reply

    def judge_one(self, item: JudgeItem) -> JudgeResult:
        try:
            reply = self._ask(item)
            content = (reply.choices[0].message.content if reply.choices else "") or ""
        except Exception as exc:  # noqa: BLE001 - any failure is this item's error, not the run's
            return JudgeResult(item.key, None, "", error=f"{type(exc).__name__}: {str(exc)[:500]}")
        return result_from_reply(item.key, content)

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
                result = result_from_reply(generated.key, generated.text)
                results.append(result)
                if on_result is not None:
                    on_result(result)

        gl.generate_all(
            self.lm, requests, self.settings, batch_size=self.batch_size, on_batch=on_batch
        )
        return results

    def close(self) -> None:
        self.lm = None  # type: ignore[assignment]
