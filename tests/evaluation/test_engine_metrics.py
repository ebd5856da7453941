"""The evaluation engine's metrics on constructed cases whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workers.engine.evaluation.agreement import cohen_kappa
from workers.engine.evaluation.length_control import length_controlled_win_rate
from workers.engine.evaluation.pairwise import (
    PairItem,
    combine_orders,
    judge_both_orders,
    win_rate,
)
from workers.engine.evaluation.perf import (
    RequestMeasure,
    api_cost_per_1k,
    local_cost_per_1k,
    perf_summary,
)
from workers.engine.evaluation.reference import (
    chrf,
    exact_match,
    final_number,
    normalise_answer,
    normalised_match,
    numeric_match,
    reference_scores,
)
from workers.engine.evaluation.refusal import is_refusal, safety_rates
from workers.engine.evaluation.stats import bootstrap_ci
from workers.engine.evaluation.textstats import format_counts, format_stats, length_ratio


def test_exact_match_ignores_only_surrounding_whitespace():
    assert exact_match(" Paris\n", "Paris")
    assert not exact_match("paris", "Paris")


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [("The Eiffel Tower!", "eiffel tower"), ("  an   apple.", "Apple"), ("Paris.", "paris")],
)
def test_normalised_match_is_squad_normalisation(prediction, reference):
    assert normalised_match(prediction, reference)


def test_normalisation_removes_articles_punctuation_and_case():
    assert normalise_answer("The  Quick, brown FOX") == "quick brown fox"
    assert not normalised_match("Paris", "London")


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("So the answer is 1,234.5.", 1234.5),
        ("-3 apples, then 7", 7.0),
        ("x = -12", -12.0),
        ("half is .5", 0.5),
        ("no digits", None),
    ],
)
def test_final_number_is_the_last_number_written(text, number):
    assert final_number(text) == number


def test_numeric_match_compares_final_numbers_with_tolerance():
    assert numeric_match("First 3, then 4, so 42.", "42")
    assert numeric_match("0.30000000000000004", "0.3")
    assert not numeric_match("41", "42")
    assert not numeric_match("forty-two", "42")


def test_chrf_is_100_for_identical_text_and_lower_for_different_text():
    assert chrf("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert 0 < chrf("the cat sat", "the cat sat on the mat") < 100
    scores = reference_scores("42", "42")
    assert scores["exact_match"] == scores["numeric_match"] == 1.0


def test_disagreeing_orders_count_as_a_tie():
    assert combine_orders("first", "second") == 1.0  # candidate preferred in both orders
    assert combine_orders("second", "first") == 0.0  # baseline preferred in both orders
    assert combine_orders("first", "first") == 0.5  # the first position wins both times
    assert combine_orders("tie", "tie") == 0.5
    assert combine_orders("first", "tie") == 0.5


def test_a_judge_that_always_prefers_the_first_position_yields_only_ties():
    items = [PairItem(i, f"q{i}", f"candidate {i}", f"baseline {i}") for i in range(50)]
    outcomes = judge_both_orders(items, lambda prompt, first, second: "first")
    rate = win_rate([o.outcome for o in outcomes if o.outcome is not None])
    assert rate.n == 50
    assert rate.tie_rate == 1.0
    assert rate.win_rate == 0.5
    assert rate.wins == rate.losses == 0


def test_a_judge_that_prefers_the_candidate_wins_in_both_orders():
    items = [PairItem(i, "q", "GOOD", "meh") for i in range(10)]
    outcomes = judge_both_orders(
        items, lambda prompt, first, second: "first" if first == "GOOD" else "second"
    )
    assert win_rate([o.outcome for o in outcomes]).win_rate == 1.0


def _longer_wins(n: int, seed: int) -> tuple[list[float], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    baseline = rng.integers(200, 800, n).astype(float)
    diff = rng.normal(120, 200, n)  # the candidate is usually, not always, longer
    candidate = baseline + diff
    items = [
        PairItem(i, "q", "x" * int(c), "y" * int(b))
        for i, (c, b) in enumerate(zip(candidate, baseline, strict=True))
    ]
    outcomes = judge_both_orders(
        items, lambda prompt, first, second: "first" if len(first) > len(second) else "second"
    )
    return [o.outcome for o in outcomes], candidate, baseline


def test_a_judge_that_prefers_longer_answers_is_pulled_back_to_about_50_by_length_control():
    outcomes, candidate, baseline = _longer_wins(400, seed=3)
    result = length_controlled_win_rate(outcomes, candidate, baseline)
    assert abs(result.raw - 0.5) > 0.2  # raw: the candidate "wins" because it is longer
    assert abs(result.length_controlled - 0.5) < 0.1
    assert abs(result.length_controlled - 0.5) < abs(result.raw - 0.5)
    assert result.length_coefficient > 0
    assert result.warning


def test_length_control_leaves_a_length_blind_judge_alone():
    rng = np.random.default_rng(5)
    n = 600
    baseline = rng.integers(200, 800, n)
    candidate = baseline + rng.normal(0, 200, n)
    outcomes = (rng.random(n) < 0.7).astype(float)  # true win rate 0.7, whatever the length
    result = length_controlled_win_rate(outcomes, candidate, baseline)
    assert result.length_controlled == pytest.approx(result.raw, abs=0.05)
    assert not result.warning


def test_bootstrap_ci_covers_the_true_rate_on_synthetic_data():
    truth = 0.62
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        sample = (rng.random(300) < truth).astype(float)
        low, high = bootstrap_ci(sample, seed=seed, resamples=1000)
        assert low < sample.mean() < high
        covered += low <= truth <= high
    assert covered >= 34  # ~95 % nominal; 34/40 leaves room for sampling noise


def test_bootstrap_ci_is_seeded():
    values = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0]
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert all(math.isnan(v) for v in bootstrap_ci([], seed=1))


def test_cohen_kappa_on_a_known_table():
    # Wikipedia's example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → p_o 0.7, p_e 0.5, κ 0.4.
    judge = ["yes"] * 25 + ["no"] * 25
    human = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = cohen_kappa(judge, human)
    assert result.n == 50
    assert result.raw == pytest.approx(0.7)
    assert result.kappa == pytest.approx(0.4)


def test_cohen_kappa_is_zero_for_chance_and_one_for_perfect_agreement():
    assert cohen_kappa(["a", "b", "a", "b"], ["a", "b", "a", "b"]).kappa == pytest.approx(1.0)
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]).kappa == pytest.approx(0.0)
    with pytest.raises(ValueError):
        cohen_kappa(["a"], [])


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "I can\u2019t assist with making weapons.",
        "I won't provide instructions for that.",
        "",
        "As an AI, I cannot do this.",
    ],
)
def test_refusals_are_detected(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize(
    "answer",
    [
        "To kill a Python process, run `kill <pid>`.",
        "Sure! Here is a list:\n- one\n- two",
        "Paris is the capital of France. " * 20 + "I can't help but admire it.",
    ],
)
def test_helpful_answers_are_not_refusals(answer):
    assert not is_refusal(answer)


def test_safety_rates_split_refusal_and_over_refusal():
    rates = safety_rates(
        [
            (True, "I can't help with that."),
            (True, "Sure, here is how."),
            (False, "I'm sorry, but I cannot do that."),
            (False, "Here you go."),
            (False, "Of course."),
            (False, "Happy to help."),
        ]
    )
    assert rates.refusal_rate == 0.5
    assert rates.over_refusal_rate == 0.25


def test_format_counts_lists_headings_and_code_blocks():
    text = "# Title\n\nSteps:\n1. one\n2) two\n- three\n\n```python\nprint(1)\n```\n## End"
    counts = format_counts(text)
    assert (counts.list_items, counts.headings, counts.code_blocks) == (3, 2, 1)
    stats = format_stats([text, "plain"])
    assert stats["with_list"] == stats["with_heading"] == stats["with_code_block"] == 0.5


def test_length_ratio_is_a_ratio_of_sums():
    assert length_ratio(["aa", "aaaa"], ["aaa", "aaa"]) == 1.0
    assert length_ratio(["a"], ["aaaa"]) == 0.25
    assert math.isnan(length_ratio(["a"], [""]))


def test_perf_percentiles_throughput_and_costs():
    measures = [
        RequestMeasure(seconds=s, prompt_tokens=100, completion_tokens=50) for s in (1, 2, 3, 4, 10)
    ]
    perf = perf_summary(measures)
    assert perf.latency_p50 == 3.0
    assert perf.latency_p95 == pytest.approx(8.8)
    assert perf.tokens_per_second == pytest.approx(250 / 20)
    assert perf_summary(measures, wall_seconds=5).tokens_per_second == pytest.approx(50)
    # 100 in × $1/M + 50 out × $2/M = $0.0002 per request → $0.20 per 1k.
    assert api_cost_per_1k(measures, input_usd_per_mtok=1, output_usd_per_mtok=2) == pytest.approx(
        0.2
    )
    # 50 tokens at 100 tok/s = 0.5 s of a $3.60 GPU hour = $0.0005 → $0.50 per 1k.
    assert local_cost_per_1k(measures, tokens_per_second=100, gpu_hour_usd=3.6) == pytest.approx(
        0.5
    )


def test_batched_throughput_is_tokens_over_wall_time_and_skips_phases_cut_off():
    from workers.engine.evaluation.scoring import AnswerRec, perf_for

    single = [AnswerRec("a", completion_tokens=10, latency_ms=500)]
    # A concurrent API phase of 4 answers at concurrency 2 that took 2 s: 1 s per pair.
    phase = [AnswerRec("b", completion_tokens=20, batch_size=2, batch_ms=1000) for _ in range(4)]
    cut_off = [AnswerRec("c", completion_tokens=999, batch_size=2, batch_ms=0)]
    perf = perf_for({"kind": "api"}, single + phase + cut_off, gpu_hour_usd=1.0)
    assert perf["tokens_per_s_batch1"] == pytest.approx(20)
    assert perf["tokens_per_s_batched"] == pytest.approx(80 / 2)
    assert perf["batch_size"] == 2 and perf["requests"] == 6
