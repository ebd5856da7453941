"""The pairwise judge client: the real `openai` client against a loopback judge."""

from __future__ import annotations

import json
import re

import pytest

from tests.evaluation.chat_server import ChatHandler, serve
from workers.engine.evaluation.pairwise import (
    PAIRWISE_RESPONSE_FORMAT,
    PairItem,
    PairwiseJudgeClient,
    parse_pairwise,
    win_rate,
)
from workers.engine.judge import JudgeParseError


class PairHandler(ChatHandler):
    """Prefers the answer containing GOOD; with FIRST in the prompt, always answers A."""

    def answer(self, body):
        user = body["messages"][-1]["content"]
        a = re.search(r"<answer_a>\n(.*)\n</answer_a>", user, re.DOTALL).group(1)
        if "FIRST" in user.split("<answer_a>")[0]:
            winner = "A"
        elif "GARBAGE" in a:
            winner = "maybe"
        else:
            winner = "A" if "GOOD" in a else "B"
        return json.dumps({"winner": winner, "rationale": "because"})


@pytest.fixture
def pair_server():
    yield from serve(PairHandler)


def test_each_pair_is_judged_in_both_orders_with_the_schema(pair_server):
    client = PairwiseJudgeClient(base_url=pair_server.base_url, api_key="k", model="m")
    try:
        outcomes = client.judge_pairs(
            [PairItem(1, "q", "GOOD answer", "plain"), PairItem(2, "q", "plain", "GOOD one")]
        )
    finally:
        client.close()
    assert [o.outcome for o in outcomes] == [1.0, 0.0]
    assert len(pair_server.requests) == 4
    assert all(r["response_format"] == PAIRWISE_RESPONSE_FORMAT for r in pair_server.requests)
    first = pair_server.requests[0]["messages"][-1]["content"]
    assert "<answer_a>\nGOOD answer\n</answer_a>" in first or "<answer_a>\nplain" in first


def test_a_position_biased_judge_over_http_gives_only_ties(pair_server):
    client = PairwiseJudgeClient(base_url=pair_server.base_url, api_key="k", model="m")
    try:
        outcomes = client.judge_pairs([PairItem(i, "FIRST", f"c{i}", f"b{i}") for i in range(6)])
    finally:
        client.close()
    rate = win_rate([o.outcome for o in outcomes])
    assert rate.tie_rate == 1.0 and rate.win_rate == 0.5


def test_an_unreadable_verdict_is_that_orders_error(pair_server):
    client = PairwiseJudgeClient(base_url=pair_server.base_url, api_key="k", model="m")
    try:
        outcome = client.judge_pair(PairItem(1, "q", "GARBAGE", "plain"))
    finally:
        client.close()
    assert outcome.candidate_first.verdict is None
    assert "winner" in outcome.candidate_first.error
    assert outcome.outcome is None


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ('{"winner": "A", "rationale": "r"}', "first"),
        ('```json\n{"winner": "b", "rationale": "r"}\n```', "second"),
        ('{"winner": "tie"}', "tie"),
    ],
)
def test_parse_pairwise_reads_the_json_asked_for(reply, verdict):
    assert parse_pairwise(reply)[0] == verdict


@pytest.mark.parametrize("reply", ["", "A is better", '{"winner": "C"}', '{"score": 3}', "[1]"])
def test_parse_pairwise_refuses_anything_else(reply):
    with pytest.raises(JudgeParseError):
        parse_pairwise(reply)
