"""A small reviewed project: prompts (train and held-out), a job with two samples per prompt,
filter verdicts, real review decisions (approve, edit, reject), and top-k on some completions."""

from __future__ import annotations

import numpy as np
import pytest

from distillapp.filters.models import CompletionVerdict
from distillapp.prompts.models import Split
from distillapp.review.conf import DEFAULT_REASONS
from distillapp.review.services import review_decide, review_queue_sync
from tests.factories import (
    CompletionFactory,
    GenerationJobFactory,
    PromptFactory,
    PromptSetFactory,
    TeacherFactory,
)
from workers.engine import topk_format

REJECT_REASON = DEFAULT_REASONS[0]


def topk_blob(n_tokens: int = 3, *, strings: bool = False) -> bytes:
    if strings:
        rec = topk_format.from_token_strings(
            ["a"] * n_tokens, [["a", "b"]] * n_tokens, [[-0.1, -2.0]] * n_tokens
        )
        return topk_format.encode(rec)
    ids = np.arange(n_tokens, dtype=np.int64) + 5
    alt = np.stack([ids, ids + 1], axis=1)
    lps = np.full((n_tokens, 2), -0.5, dtype=np.float16)
    return topk_format.encode(topk_format.TopkRecord(ids, alt, lps))


def decide(project, user, completion, decision, edited_text=None):
    from datetime import timedelta

    from django.utils import timezone

    from distillapp.review.models import ReviewLease

    review_queue_sync(project=project, force=True)
    ReviewLease.objects.create(
        completion=completion,
        project=project,
        reviewer=user,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    kwargs = {"reason": REJECT_REASON} if decision == "reject" else {}
    return review_decide(
        completion=completion,
        reviewer=user,
        decision=decision,
        edited_text=edited_text,
        **kwargs,
    )


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def reviewed(project, alice, media):
    """prompts p0..p3 (train, references "4","6","8","10") and h0 (held-out); job with 2 samples.

    p0: s0 approved (top-k ids), s1 approved (top-k strings)
    p1: s0 edited to "<think>x</think>6 edited", s1 rejected
    p2: s0 approved "<think>hmm</think>8" (reference matches), s1 passed by filters, unreviewed
    p3: s0 approved "<think>hmm</think>11" (reference 10: mismatch), s1 approved, same text as s0
    h0: held-out, one completion forced to approved in the database (never through review)
    """
    prompt_set = PromptSetFactory(project=project, sha256="ab" * 32, source_name="maths.jsonl")
    teacher = TeacherFactory(project=project)
    job = GenerationJobFactory(
        project=project,
        teacher=teacher,
        prompt_set=prompt_set,
        samples_per_prompt=2,
        teacher_snapshot={
            "name": teacher.name,
            "model": "teacher-model",
            "decoding": {"temperature": 0.7},
            "api_key_last4": "9999",
        },
    )
    refs = ["4", "6", "8", "10"]
    prompts = [
        PromptFactory(prompt_set=prompt_set, text=f"What is 2*{i + 2}?", reference=r)
        for i, r in enumerate(refs)
    ]
    heldout = PromptFactory(prompt_set=prompt_set, text="Held-out question", split=Split.HELDOUT)
    texts = {
        (0, 0): "4",
        (0, 1): "four",
        (1, 0): "6 maybe",
        (1, 1): "seven",
        (2, 0): "<think>hmm</think>8",
        (2, 1): "eight",
        (3, 0): "<think>hmm</think>11",
        (3, 1): "<think>hmm</think>11",
    }
    c = {}
    for (p, s), text in texts.items():
        c[(p, s)] = CompletionFactory(job=job, prompt=prompts[p], sample_index=s, text=text)
    c[(0, 0)].topk = topk_blob(1)
    c[(0, 0)].save(update_fields=["topk"])
    c[(0, 1)].topk = topk_blob(4, strings=True)
    c[(0, 1)].save(update_fields=["topk"])
    c[(1, 0)].topk = topk_blob(2)
    c[(1, 0)].save(update_fields=["topk"])
    hc = CompletionFactory(job=job, prompt=heldout, sample_index=0, text="secret answer")
    for comp in [*c.values(), hc]:
        CompletionVerdict.objects.create(
            completion=comp, project=project, state="passed", judge_score=7.0
        )
    CompletionVerdict.objects.filter(completion=c[(0, 1)]).update(judge_score=9.0)
    CompletionVerdict.objects.filter(completion=c[(3, 1)]).update(judge_score=3.0)
    decide(project, alice, c[(0, 0)], "approve")
    decide(project, alice, c[(0, 1)], "approve")
    decide(project, alice, c[(1, 0)], "edit", "<think>x</think>6 edited")
    decide(project, alice, c[(1, 1)], "reject")
    decide(project, alice, c[(2, 0)], "approve")
    decide(project, alice, c[(3, 0)], "approve")
    decide(project, alice, c[(3, 1)], "approve")
    # Forge an approval of a held-out prompt's completion straight in the database.
    from distillapp.review.models import ReviewItem

    ReviewItem.objects.update_or_create(
        completion=hc,
        defaults={
            "project": project,
            "job": job,
            "prompt": heldout,
            "state": "done",
            "decision": "approve",
        },
    )
    return {"job": job, "prompts": prompts, "heldout": heldout, "c": c, "hc": hc, "set": prompt_set}
