"""Pairwise LLM judging against a baseline (the teacher), in both orders.

Each pair is judged twice: candidate shown first, then baseline shown first (position swap). The
outcome for the candidate is 1 (both orders prefer it), 0 (both prefer the baseline) or 0.5
otherwise: a tie in both orders, or any disagreement between the two orders, so a judge that only
prefers a position contributes ties, not wins. The win rate is the mean outcome (ties count
half), with a seeded percentile-bootstrap 95 % interval over items.

`PairwiseJudgeClient` asks an OpenAI-compatible model through the same outbound-guarded `openai`
client as the scoring judge (workers/engine/judge.py), for a strict JSON reply, with the reply
format sent as `response_format` where the endpoint takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from workers.engine.evaluation.stats import bootstrap_ci
from workers.engine.judge import JudgeClient, JudgeParseError, rationale_of, reply_object
from workers.engine.outbound import OutboundPolicy

Verdict = Literal["first", "second", "tie"]
# A judge as a plain function: (prompt, first answer, second answer) -> which is better.
JudgeFn = Callable[[str, str, str], Verdict]

PAIRWISE_SYSTEM_PROMPT = (
    "You are a strict, fair judge comparing two AI assistant answers to the same prompt. "
    "Judge helpfulness, correctness and following the prompt's instructions. Do not let the "
    "order of the answers or their length influence you. "
    'Reply with a JSON object only: {"winner": "A" | "B" | "tie", '
    '"rationale": "<one or two sentences>"}.'
)
DEFAULT_CRITERIA = "Which answer responds to the prompt better?"

PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B", "tie"]},
        "rationale": {"type": "string"},
    },
    "required": ["winner", "rationale"],
    "additionalProperties": False,
}
PAIRWISE_RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "pairwise_judgement", "strict": True, "schema": PAIRWISE_SCHEMA},
}
_WINNERS: dict[str, Verdict] = {"a": "first", "b": "second", "tie": "tie"}
_FIRST_SCORE = {"first": 1.0, "second": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class PairItem:
    key: int
    prompt: str
    candidate: str
    baseline: str


@dataclass(frozen=True)
class PairJudgement:
    verdict: Verdict | None
    rationale: str = ""
    error: str = ""


@dataclass(frozen=True)
class PairOutcome:
    """Both orders of one pair; `outcome` is None when either order has no verdict."""

    key: int
    candidate_first: PairJudgement
    baseline_first: PairJudgement

    @property
    def outcome(self) -> float | None:
        a, b = self.candidate_first.verdict, self.baseline_first.verdict
        if a is None or b is None:
            return None
        return combine_orders(a, b)


@dataclass(frozen=True)
class WinRate:
    win_rate: float  # 0–1, ties count half
    ci_low: float
    ci_high: float
    wins: int
    ties: int
    losses: int
    n: int

    @property
    def tie_rate(self) -> float:
        return self.ties / self.n if self.n else float("nan")


def combine_orders(candidate_first: Verdict, baseline_first: Verdict) -> float:
    """The candidate's outcome from both orders: 1, 0, or 0.5 for a tie or a disagreement."""
    shown_first = _FIRST_SCORE[candidate_first]
    shown_second = 1.0 - _FIRST_SCORE[baseline_first]
    return shown_first if shown_first == shown_second else 0.5


def win_rate(outcomes: Sequence[float], *, seed: int = 0, resamples: int = 2000) -> WinRate:
    """The mean outcome with a seeded bootstrap 95 % interval, and the win/tie/loss counts."""
    values = [float(o) for o in outcomes]
    n = len(values)
    wins = sum(1 for v in values if v == 1.0)
    losses = sum(1 for v in values if v == 0.0)
    low, high = bootstrap_ci(values, seed=seed, resamples=resamples)
    mean = sum(values) / n if n else float("nan")
    return WinRate(mean, low, high, wins, n - wins - losses, losses, n)


def judge_both_orders(items: Iterable[PairItem], judge: JudgeFn) -> list[PairOutcome]:
    """Judge each pair with a plain judge function in both orders."""
    out = []
    for item in items:
        first = judge(item.prompt, item.candidate, item.baseline)
        swapped = judge(item.prompt, item.baseline, item.candidate)
        out.append(PairOutcome(item.key, PairJudgement(first), PairJudgement(swapped)))
    return out


def parse_pairwise(text: str) -> tuple[Verdict, str]:
    """(verdict, rationale) from a reply that is exactly the JSON object asked for (or one
    ```json fence holding it) with "winner" one of A, B, tie; otherwise JudgeParseError."""
    data = reply_object(text, "winner")
    winner = data["winner"]
    verdict = _WINNERS.get(winner.strip().lower()) if isinstance(winner, str) else None
    if verdict is None:
        raise JudgeParseError(f"The judge named no winner among A, B, tie: {winner!r}.", text or "")
    return verdict, rationale_of(data)


def build_pairwise_messages(
    *, prompt: str, first: str, second: str, criteria: str = DEFAULT_CRITERIA
) -> list[dict[str, str]]:
    user = (
        f"{criteria}\n\n"
        f"<prompt>\n{prompt}\n</prompt>\n\n"
        f"<answer_a>\n{first}\n</answer_a>\n\n"
        f"<answer_b>\n{second}\n</answer_b>\n\n"
        "Which answer is better, A or B (or a tie)? Reply with the JSON object only."
    )
    return [
        {"role": "system", "content": PAIRWISE_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


@dataclass(frozen=True)
class _Request:
    prompt: str
    first: str
    second: str


class PairwiseJudgeClient(JudgeClient):
    """The pairwise judge on an OpenAI-compatible endpoint: JudgeClient's guarded client and its
    response_format fallback (an endpoint that refuses the schema is asked without it), with the
    pairwise prompt and reply. A failed call is that order's error, never an exception."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        criteria: str = DEFAULT_CRITERIA,
        concurrency: int = 4,
        timeout: float = 60,
        max_tokens: int = 400,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            model=model,
            rubric=criteria,
            concurrency=concurrency,
            timeout=timeout,
            max_tokens=max_tokens,
            outbound=outbound,
        )

    def _create(self, item: Any, *, structured: bool) -> Any:
        extra: dict[str, Any] = {"response_format": PAIRWISE_RESPONSE_FORMAT} if structured else {}
        return self.client.chat.completions.create(
            model=self.model,
            messages=build_pairwise_messages(
                prompt=item.prompt, first=item.first, second=item.second, criteria=self.rubric
            ),  # type: ignore[arg-type]
            temperature=0,
            max_tokens=self.max_tokens,
            **extra,
        )

    def compare(self, prompt: str, first: str, second: str) -> PairJudgement:
        try:
            reply = self._ask(_Request(prompt, first, second))  # type: ignore[arg-type]
            content = (reply.choices[0].message.content if reply.choices else "") or ""
        except Exception as exc:  # noqa: BLE001 - one failed call is this order's error
            return PairJudgement(None, error=f"{type(exc).__name__}: {str(exc)[:500]}")
        try:
            verdict, rationale = parse_pairwise(content)
        except JudgeParseError as exc:
            return PairJudgement(None, error=str(exc))
        return PairJudgement(verdict, rationale)

    def judge_pair(self, item: PairItem) -> PairOutcome:
        return PairOutcome(
            item.key,
            self.compare(item.prompt, item.candidate, item.baseline),
            self.compare(item.prompt, item.baseline, item.candidate),
        )

    def judge_pairs(
        self, items: Iterable[PairItem], on_result: Callable[[PairOutcome], None] | None = None
    ) -> list[PairOutcome]:
        """Every pair in both orders, `concurrency` calls at a time; results in input order."""
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="pair") as pool:
            results = list(pool.map(self.judge_pair, items))
        if on_result is not None:
            for result in results:
                on_result(result)
        return results
