"""Reviewers' own pairwise verdicts on an eval run's answers, and how well the judge agrees.

The judge's win rate is only as good as the judge. A reviewer reads a model's answer beside the
baseline's in the side-by-side viewer and says which is better (or a tie); Cohen's kappa between
those verdicts and the judge's outcomes on the same pairs is the judge–human agreement shown next
to every judge number. Verdicts are added after the run has ended, so agreement is computed when
it is read, not stored with the scores.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ValidationError

from distillapp.evaluation.models import (
    EvalHumanVerdict,
    EvalItem,
    EvalJudgement,
    EvalRun,
    HumanPreference,
)
from workers.engine.evaluation.agreement import cohen_kappa

# The judge's outcome for the candidate (1 / 0.5 / 0) in the reviewers' words.
_OUTCOME_LABEL = {
    1.0: HumanPreference.CANDIDATE,
    0.5: HumanPreference.TIE,
    0.0: HumanPreference.BASELINE,
}
BASIS = (
    "reviewers' own verdicts (candidate better, tie, baseline better) on pairs the judge "
    "compared in this run"
)


def eval_human_verdict_set(
    *, run: EvalRun, item_id: int, model_key: str, preferred: str, user: Any
) -> EvalHumanVerdict:
    """Record (or change) `user`'s verdict on `model_key`'s answer to the item against the
    baseline's. Idempotent per (run, model, item, user). ValidationError names the bad field."""
    if not run.judge or not run.baseline_key:
        raise ValidationError({"run": "This run has no judge: there is nothing to compare with."})
    if preferred not in HumanPreference.values:
        raise ValidationError({"preferred": f"Choose one of {', '.join(HumanPreference.values)}."})
    candidates = {s["key"] for s in run.model_specs} - {run.baseline_key}
    if model_key not in candidates:
        raise ValidationError({"model_key": "Not a model this run compared with the baseline."})
    item = EvalItem.objects.filter(pk=item_id, eval_set__in=run.eval_sets.all()).first()
    if item is None:
        raise ValidationError({"item_id": "Not an item of this run."})
    verdict, _created = EvalHumanVerdict.objects.update_or_create(
        run=run,
        model_key=model_key,
        item=item,
        user=user,
        defaults={"preferred": preferred},
    )
    return verdict


def human_verdicts_for(
    *, run: EvalRun, user: Any, item_ids: list[int]
) -> dict[int, dict[str, str]]:
    """`user`'s verdicts on the given items: item id → model key → preferred."""
    rows = EvalHumanVerdict.objects.filter(run=run, user=user, item_id__in=item_ids)
    out: dict[int, dict[str, str]] = {}
    for item_id, key, preferred in rows.values_list("item_id", "model_key", "preferred"):
        out.setdefault(item_id, {})[key] = preferred
    return out


def pairwise_agreement(
    *, run: EvalRun, verdicts: list[tuple[int, str, str]] | None = None
) -> dict[str, Any]:
    """Cohen's kappa and raw agreement between reviewers' verdicts and the judge's outcomes on
    the same (model, item) pairs; one pair per reviewer verdict. Pairs the judge left without an
    outcome (an order unparsed) are not counted. `verdicts` (item id, model key, preferred):
    the run's, when the caller already knows them (none, for a run without any)."""
    if verdicts is None:
        verdicts = list(
            EvalHumanVerdict.objects.filter(run=run).values_list(
                "item_id", "model_key", "preferred"
            )
        )
    # Only the judged pairs reviewers looked at: a run has thousands of judgements, and most
    # runs no verdicts at all.
    outcomes = (
        {
            (item_id, key): outcome
            for item_id, key, outcome in EvalJudgement.objects.filter(
                run=run, outcome__isnull=False, item_id__in={v[0] for v in verdicts}
            ).values_list("item_id", "model_key", "outcome")
        }
        if verdicts
        else {}
    )
    judge, human = [], []
    for item_id, key, preferred in verdicts:
        outcome = outcomes.get((item_id, key))
        if outcome is None:
            continue
        judge.append(_OUTCOME_LABEL[outcome])
        human.append(preferred)
    result = cohen_kappa(judge, human)
    return {
        "n": result.n,
        "raw": None if math.isnan(result.raw) else result.raw,
        "kappa": None if math.isnan(result.kappa) else result.kappa,
        "basis": BASIS,
    }


def runs_with_verdicts(runs: list[EvalRun]) -> set[int]:
    """Which of `runs` have any reviewer verdict (one query for a list of runs)."""
    return set(
        EvalHumanVerdict.objects.filter(run__in=runs).values_list("run_id", flat=True).distinct()
    )


def judge_human_agreement(*, run: EvalRun, has_verdicts: bool | None = None) -> dict[str, Any]:
    """The agreement shown next to judge numbers: on reviewers' pairwise verdicts of this run when
    there are any, else on the project's reviewed completions that the judge scored in the filters
    (computed when the run was scored). Both are listed under `sources`. `has_verdicts` (from
    `runs_with_verdicts`) saves a list of runs a query per run without verdicts."""
    stored = (run.results or {}).get("agreement") or {}
    if not run.judge:
        return stored
    pairwise = pairwise_agreement(run=run, verdicts=None if has_verdicts is not False else [])
    chosen = pairwise if pairwise["n"] else stored
    return {**chosen, "sources": {"pairwise": pairwise, "filters": stored}}
