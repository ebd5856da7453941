from __future__ import annotations

import pytest
from django.apps import apps

from distillapp.filters.models import VerdictState
from distillapp.filters.selectors import judge_agreement
from tests.factories import CompletionVerdictFactory
from workers.judge import JudgeClient, JudgeItem, JudgeParseError, parse_judgement


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 8, "rationale": "Clear and correct."}', 8),
        ('```json\n{"score": "3", "rationale": "Wrong."}\n```', 3),
        ('Here you go: {"rationale": "ok", "score": 10} thanks', 10),
        ("Score: 7\nThe answer is fine.", 7),
        ("I would rate this 6/10 overall, despite 2 small slips.", 6),
        ("4 out of 10: mostly wrong.", 4),
        ("Overall 9.", 9),
        ('{"score": 7.5, "rationale": "half"}', 7.5),
    ],
)
def test_parse_judgement_reads_json_or_falls_back_to_a_number(reply, score):
    got, rationale = parse_judgement(reply)
    assert got == score
    assert rationale


@pytest.mark.parametrize(
    "reply", ["", "no idea", '{"score": 0, "rationale": "?"}', '{"score": 11}', "It is 42."]
)
def test_parse_judgement_refuses_replies_without_a_score_from_1_to_10(reply):
    with pytest.raises(JudgeParseError):
        parse_judgement(reply)


def test_parse_judgement_keeps_the_rationale_from_json():
    assert parse_judgement('{"score": 2, "rationale": "Off topic."}') == (2, "Off topic.")


def test_the_client_judges_many_in_parallel_against_a_loopback_server(judge_server):
    client = JudgeClient(
        base_url=judge_server.base_url,
        api_key="k",
        model="m",
        rubric="R",
        concurrency=3,
        timeout=10,
    )
    seen = []
    items = [JudgeItem(i, f"prompt {i}", "GOOD" if i % 2 else "BROKEN") for i in range(8)]
    try:
        results = client.judge_many(items, on_result=seen.append)
    finally:
        client.close()
    assert len(results) == len(seen) == 8
    by_key = {r.key: r for r in results}
    assert by_key[1].score == 9 and not by_key[1].error
    assert by_key[0].score is None and "BadRequestError" in by_key[0].error


def test_an_unreachable_judge_is_an_item_error_not_an_exception():
    client = JudgeClient(
        base_url="http://127.0.0.1:9/v1", api_key="", model="m", rubric="R", timeout=2
    )
    client.client = client.client.with_options(max_retries=0)
    result = client.judge_one(JudgeItem(1, "p", "c"))
    assert result.score is None and "Connection" in result.error


@pytest.mark.django_db
def test_judge_agreement_counts_reviews_against_the_threshold(project, bob, alice):
    try:
        review_model = apps.get_model("review", "Review")
    except LookupError:
        pytest.skip("the review app has no Review model yet")
    assert judge_agreement(project=project) == {"agree": 0, "total": 0, "rate": None}
    cases = [
        (9, "approve", True),
        (8, "edit", True),
        (3, "reject", True),
        (9, "reject", False),
        (2, "approve", False),
        (7, "skip", None),
    ]
    for score, decision, _agrees in cases:
        verdict = CompletionVerdictFactory(
            completion__job__project=project,
            state=VerdictState.PASSED,
            flags=[],
            reasons={},
            judge_score=score,
        )
        review_model.objects.create(
            completion=verdict.completion, project=project, reviewer=bob, decision=decision
        )
    unscored = CompletionVerdictFactory(
        completion__job__project=project, state=VerdictState.PASSED, judge_score=None
    )
    review_model.objects.create(
        completion=unscored.completion, project=project, reviewer=alice, decision="approve"
    )
    assert judge_agreement(project=project) == {"agree": 3, "total": 5, "rate": 0.6}
