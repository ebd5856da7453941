from __future__ import annotations

import pytest

from tests.generation.fake_openai import FakeOpenAI
from workers.engine.judge import (
    MAX_REPLY,
    RESPONSE_FORMAT,
    JudgeClient,
    JudgeItem,
    JudgeParseError,
    parse_judgement,
    result_from_reply,
)


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 8, "rationale": "Clear and correct."}', 8),
        ('```json\n{"score": 3, "rationale": "Wrong."}\n```', 3),
        ('  \n{"rationale": "ok", "score": 10}\n', 10),
        ('```\n{"score": 1, "rationale": "Off topic."}\n```', 1),
        ('{"score": 7.5, "rationale": "half"}', 7.5),
    ],
)
def test_parse_judgement_reads_a_json_object_with_a_score(reply, score):
    got, rationale = parse_judgement(reply)
    assert got == score
    assert rationale


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "no idea",
        '{"score": 0, "rationale": "?"}',
        '{"score": 11}',
        '{"score": "3", "rationale": "a string is not a number"}',
        '{"score": true}',
        '{"score": NaN}',
        '{"rationale": "forgot the score"}',
        "[7]",
        "It is 42.",
        # What the old fallbacks read a score out of: prose, fractions, JSON inside prose.
        "Score: 7\nThe answer is fine.",
        "I would rate this 6/10 overall, despite 2 small slips.",
        "4 out of 10: mostly wrong.",
        "Overall 9.",
        'Here you go: {"rationale": "ok", "score": 10} thanks',
        # The rubric echoed back: its "1" must never become "Judge score 1/10".
        "Score the assistant's answer from 1 (useless or wrong) to 10 (excellent).",
    ],
)
def test_parse_judgement_refuses_everything_but_the_json_asked_for(reply):
    with pytest.raises(JudgeParseError) as exc:
        parse_judgement(reply)
    assert exc.value.reply == reply


def test_an_unreadable_reply_keeps_its_start_for_people_to_read():
    result = result_from_reply(5, "x" * 5000)
    assert result.score is None and result.error
    assert result.reply == "x" * MAX_REPLY


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


def test_the_client_asks_for_the_json_schema_as_response_format(judge_server):
    client = JudgeClient(base_url=judge_server.base_url, api_key="k", model="m", rubric="R")
    try:
        result = client.judge_one(JudgeItem(1, "p", "GOOD"))
    finally:
        client.close()
    assert result.score == 9
    assert judge_server.requests[0]["response_format"] == RESPONSE_FORMAT
    schema = RESPONSE_FORMAT["json_schema"]["schema"]
    assert schema["required"] == ["score", "rationale"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert client.structured_output is True


def test_an_endpoint_refusing_response_format_is_asked_again_without_it_once_per_run():
    """The fake server answers 400 to response_format: the first item is retried without it and
    the rest of the run never sends it; its plain-text replies are judge errors, not scores."""
    with FakeOpenAI(models=("judge",)) as server:
        server.reject_response_format = True
        client = JudgeClient(
            base_url=server.base_url, api_key="k", model="judge", rubric="R", concurrency=1
        )
        client.client = client.client.with_options(max_retries=0)
        try:
            results = client.judge_many([JudgeItem(i, f"prompt {i}", "answer") for i in range(3)])
        finally:
            client.close()
        bodies = list(server.bodies)
    assert ["response_format" in b for b in bodies] == [True, False, False, False]
    assert server.statuses[400] == 1
    assert client.structured_output is False
    for result in results:
        assert result.score is None and "not the JSON object" in result.error
        assert result.reply.startswith("Answer to: ")


def test_a_400_on_an_endpoint_known_to_take_response_format_is_the_item_error(judge_server):
    client = JudgeClient(
        base_url=judge_server.base_url, api_key="k", model="m", rubric="R", concurrency=1
    )
    client.client = client.client.with_options(max_retries=0)
    try:
        good = client.judge_one(JudgeItem(1, "p", "GOOD"))
        broken = client.judge_one(JudgeItem(2, "p", "BROKEN"))
    finally:
        client.close()
    assert good.score == 9 and broken.score is None and "BadRequestError" in broken.error
    assert len(judge_server.requests) == 2  # no retry without response_format
    assert client.structured_output is True


def test_an_unreachable_judge_is_an_item_error_not_an_exception():
    client = JudgeClient(
        base_url="http://127.0.0.1:9/v1", api_key="", model="m", rubric="R", timeout=2
    )
    client.client = client.client.with_options(max_retries=0)
    result = client.judge_one(JudgeItem(1, "p", "c"))
    assert result.score is None and "Connection" in result.error
