"""The scoring stage of an eval run: contamination, judge–human agreement, and every metric
(workers.engine.evaluation.scoring) from the run's answers and judgements.

Contamination: 13-gram overlap (lm-evaluation-harness's normalisation) between each eval item
(its prompt and its reference, as separate texts) and every dataset version an evaluated student
was trained on (its train.jsonl and validation.jsonl in MEDIA_ROOT: every message and completion)
plus the project's train-split prompts. Held-out prompts are left out: they are the source of the
held-out eval set and would flag it whole.

Judge–human agreement is computed on what humans have reviewed: the project's completions with a
final human decision (approve/reject, not bulk actions) that the filters' scoring judge scored
with the same judge teacher (same judge key: teacher, model, endpoint, rubric). The judge's label
is "approve" when its score reaches the project's judge threshold. It is the judge's agreement
with people on this project's own task, not on the pairwise eval verdicts, which no human labels.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from distillapp.datasets.models import DatasetVersion
from distillapp.evaluation.models import EvalAnswer, EvalItem, EvalJudgement, EvalRun
from distillapp.prompts.models import Prompt, Split
from workers.engine.evaluation.agreement import cohen_kappa
from workers.engine.evaluation.contamination import ContaminationIndex
from workers.engine.evaluation.scoring import AnswerRec, ItemRec, score_run

logger = logging.getLogger(__name__)
DATASET_FILES = ("train.jsonl", "validation.jsonl")
MAX_NGRAMS_SHOWN = 3


def run_items(run: EvalRun) -> list[EvalItem]:
    return list(
        EvalItem.objects.filter(eval_set__in=run.eval_sets.all())
        .select_related("eval_set")
        .order_by("eval_set_id", "position")
    )


def _dataset_texts(version: DatasetVersion) -> Iterator[str]:
    folder = Path(settings.MEDIA_ROOT) / version.path
    for name in DATASET_FILES:
        path = folder / name
        if not version.path or not path.is_file():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                for message in row.get("messages") or []:
                    if isinstance(message, dict) and isinstance(message.get("content"), str):
                        yield message["content"]
                if isinstance(row.get("completion"), str):
                    yield row["completion"]


def contamination(run: EvalRun, items: list[EvalItem]) -> dict[str, Any]:
    """Which items share a 13-gram with what the evaluated students were trained on or with the
    project's train-split prompts; the sources scanned and the overlapping n-grams."""
    texts: list[tuple[int, str]] = []
    for item in items:
        texts.append((item.pk, item.text))
        if item.reference:
            texts.append((item.pk, item.reference))
    index: ContaminationIndex[int] = ContaminationIndex(texts)
    sources: list[dict[str, Any]] = []
    version_ids = sorted(
        {s["dataset_version_id"] for s in run.model_specs if s.get("dataset_version_id")}
    )
    for version in DatasetVersion.objects.filter(pk__in=version_ids).select_related("dataset"):
        before = index.training_rows
        index.scan(_dataset_texts(version))
        sources.append(
            {
                "kind": "dataset_version",
                "id": version.pk,
                "name": str(version),
                "texts": index.training_rows - before,
            }
        )
    before = index.training_rows
    prompts = Prompt.objects.filter(prompt_set__project=run.project, split=Split.TRAIN)
    index.scan(prompts.values_list("text", flat=True).iterator(chunk_size=2000))
    sources.append(
        {
            "kind": "prompt_sets",
            "name": "train-split prompts",
            "texts": index.training_rows - before,
        }
    )
    report = index.report()
    flagged = {str(k): grams[:MAX_NGRAMS_SHOWN] for k, grams in sorted(report.contaminated.items())}
    by_set: dict[str, dict[str, int]] = {}
    for item in items:
        row = by_set.setdefault(item.eval_set.name, {"items": 0, "contaminated": 0})
        row["items"] += 1
        row["contaminated"] += str(item.pk) in flagged
    return {
        "n": report.n,
        "items": len(items),
        "contaminated": len(flagged),
        "rate": len(flagged) / len(items) if items else 0.0,
        "sources": sources,
        "by_set": by_set,
        "item_ngrams": flagged,
    }


def judge_agreement(run: EvalRun) -> dict[str, Any]:
    """Cohen's kappa and raw agreement of the judge teacher's filter scores with human final
    decisions on the project's completions (see the module docstring for what it is computed on)."""
    basis = (
        "the project's completions with a human approve/reject decision that this judge scored "
        "in the filters (score ≥ threshold = approve)"
    )
    if not run.judge:
        return {}
    from distillapp.filters.config import config_from_settings
    from distillapp.filters.models import CompletionVerdict
    from distillapp.review.models import FinalDecision, ItemState

    config = config_from_settings(run.project.settings)
    key = config.judge_key(
        teacher_id=run.judge["teacher_id"],
        model=run.judge.get("model", ""),
        base_url=run.judge.get("base_url", ""),
    )
    rows = CompletionVerdict.objects.filter(
        project=run.project,
        judge_key=key,
        judge_score__isnull=False,
        completion__review_item__state=ItemState.DONE,
        completion__review_item__decision__in=[FinalDecision.APPROVE, FinalDecision.REJECT],
        completion__review_item__bulk_action__isnull=True,
    ).values_list("judge_score", "completion__review_item__decision")
    judge_labels, human_labels = [], []
    for score, decision in rows.iterator(chunk_size=2000):
        judge_labels.append(
            FinalDecision.APPROVE
            if score is not None and score >= config.judge_threshold
            else FinalDecision.REJECT
        )
        human_labels.append(decision)
    agreement = cohen_kappa(judge_labels, human_labels)
    return {
        "n": agreement.n,
        "raw": None if math.isnan(agreement.raw) else agreement.raw,
        "kappa": None if math.isnan(agreement.kappa) else agreement.kappa,
        "threshold": config.judge_threshold,
        "basis": basis,
    }


def eval_run_score(run: EvalRun) -> dict[str, Any]:
    """Every result of the run, as stored in `EvalRun.results`."""
    items = run_items(run)
    contam = contamination(run, items)
    flagged = set(contam["item_ngrams"])
    recs = [
        ItemRec(
            id=i.pk,
            category=i.category,
            set_kind=i.eval_set.kind,
            reference=i.reference,
            must_refuse=i.must_refuse,
            contaminated=str(i.pk) in flagged,
        )
        for i in items
    ]
    answers: dict[str, dict[int, AnswerRec]] = {}
    fields = (
        "model_key",
        "item_id",
        "text",
        "ok",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "batch_size",
        "batch_ms",
    )
    for key, item_id, *rest in (
        EvalAnswer.objects.filter(run=run).values_list(*fields).iterator(chunk_size=2000)
    ):
        answers.setdefault(key, {})[item_id] = AnswerRec(*rest)
    outcomes: dict[str, dict[int, float | None]] = {}
    for key, item_id, outcome in EvalJudgement.objects.filter(run=run).values_list(
        "model_key", "item_id", "outcome"
    ):
        outcomes.setdefault(key, {})[item_id] = outcome
    results = score_run(
        items=recs,
        specs=run.model_specs,
        answers=answers,
        outcomes=outcomes if run.judge else {},
        baseline_key=run.baseline_key,
        gpu_hour_usd=float(settings.EVAL_GPU_HOUR_USD),
    )
    results["contamination"] = contam
    results["agreement"] = judge_agreement(run)
    results["gpu_hour_usd"] = float(settings.EVAL_GPU_HOUR_USD)
    return results
