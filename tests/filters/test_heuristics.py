from __future__ import annotations

import pytest

from distillapp.filters import heuristics as h
from distillapp.filters.config import DEFAULT_REFUSALS


def test_empty_text_fails_and_whitespace_only_fails_with_its_own_reason():
    assert h.check_empty("") == "The completion is empty."
    assert "whitespace" in h.check_empty(" \n\t ")
    assert h.check_empty(" x ") is None


def test_truncated_only_when_finish_reason_is_length():
    assert "cut off" in h.check_truncated("length")
    assert h.check_truncated("stop") is None
    assert h.check_truncated("") is None


def test_length_bounds_are_inclusive_and_ignore_surrounding_whitespace():
    assert h.check_length("  abc  ", min_chars=3, max_chars=3) is None
    assert "shorter than the minimum of 4" in h.check_length("abc", min_chars=4, max_chars=10)
    assert "longer than the maximum of 2" in h.check_length("abc", min_chars=0, max_chars=2)


def test_refusal_matches_case_curly_quotes_and_line_breaks():
    text = "Well.\nI’M SORRY, but   I can’t help\nwith that."
    assert "I'm sorry, but I can't" in h.check_refusal(text, phrases=DEFAULT_REFUSALS)
    assert h.check_refusal("Sorry for the delay, here it is.", phrases=DEFAULT_REFUSALS) is None
    assert h.check_refusal("anything", phrases=[]) is None


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("one two three four five six", 3, 0.0),
        ("", 3, 0.0),
        ("too short", 3, 0.0),  # fewer than two 3-grams
        ("a b a b a b a b", 2, 5 / 7),
        ("la la la la la la", 1, 5 / 6),
    ],
)
def test_repeated_ngram_share(text, n, expected):
    assert h.repeated_ngram_share(text, n) == pytest.approx(expected)


def test_repetition_flags_a_loop_but_not_ordinary_prose():
    loop = "I think so. " * 30
    assert "repeats" in h.check_repetition(loop, n=3, threshold=0.3)
    prose = "The capital of France is Paris, a city on the Seine known for art, food and history."
    assert h.check_repetition(prose, n=3, threshold=0.3) is None


def test_repetition_uses_characters_for_text_without_spaces():
    assert h.repeated_ngram_share("哈" * 60, 3) > 0.9
    assert h.repeated_ngram_share("北京是中国的首都也是一座历史悠久的城市", 3) == 0.0


def test_echo_catches_a_copied_prompt_but_not_a_short_quoted_answer():
    prompt = "Which is the capital of France, Paris or Lyon? Answer in one word."
    assert "word for word" in h.check_echo(
        "  which is the capital of France, Paris or Lyon?   answer in one word.",
        prompt=prompt,
        threshold=0.8,
    )
    assert "copied from the prompt" in h.check_echo(
        "Which is the capital of France, Paris or Lyon?", prompt=prompt, threshold=0.8
    )
    assert h.check_echo("Paris", prompt=prompt, threshold=0.8) is None
    assert (
        h.check_echo(
            "The capital of France is Paris; Lyon is the third-largest city.",
            prompt=prompt,
            threshold=0.8,
        )
        is None
    )
    assert h.check_echo("anything", prompt="", threshold=0.8) is None


def test_reference_exact_mode_needs_the_same_text_up_to_outer_whitespace():
    assert h.check_reference(" Paris\n", reference="Paris", mode="exact") is None
    assert "exactly" in h.check_reference("paris", reference="Paris", mode="exact")


def test_reference_normalised_mode_ignores_case_punctuation_articles_and_reads_the_final_answer():
    assert h.check_reference("PARIS!", reference="paris", mode="normalised") is None
    assert (
        h.check_reference(
            "Let me think.\nThe answer is: The Eiffel Tower.",
            reference="eiffel tower",
            mode="normalised",
        )
        is None
    )
    assert (
        h.check_reference("Steps...\n#### **Paris**", reference="Paris", mode="normalised") is None
    )
    assert "does not match" in h.check_reference(
        "It is Lyon.", reference="Paris", mode="normalised"
    )


def test_reference_numeric_mode_parses_numbers_as_people_write_them():
    assert (
        h.check_reference("So the total is $1,234.50.", reference="1234.5", mode="numeric") is None
    )
    assert h.check_reference("\\boxed{3/4}", reference="0.75", mode="numeric") is None
    assert h.check_reference("Answer: −3", reference="-3", mode="numeric") is None
    assert (
        h.check_reference("2+2 gives 4, so the answer is 0", reference="0", mode="numeric") is None
    )
    assert "differs" in h.check_reference("The answer is 5.", reference="4", mode="numeric")
    assert "No number" in h.check_reference("no idea", reference="4", mode="numeric")


def test_reference_numeric_mode_falls_back_to_normalised_for_a_word_reference():
    assert h.check_reference("the answer is Paris", reference="Paris", mode="numeric") is None
    assert h.check_reference("Lyon", reference="Paris", mode="numeric") is not None


def test_parse_number_edge_cases():
    assert h.parse_number("1e3") == 1000
    assert h.parse_number("50%") == 50
    assert h.parse_number("1/0") is None
    assert h.parse_number("nothing") is None


def _slow_repeated_share(text, n):
    """The definition, written plainly: units are words, or characters for unspaced text."""
    units = text.split()
    if units and len(text.strip()) / len(units) > 20:
        units = [c for c in text if not c.isspace()]
    total = len(units) - n + 1
    if total < 2:
        return 0.0
    return (total - len({tuple(units[i : i + n]) for i in range(total)})) / total


def _slow_containment(text, prompt):
    from distillapp.filters.dedup import normalise, shingles

    c, p = normalise(text), normalise(prompt)
    cs = shingles(c)
    return len(cs & shingles(p)) / len(cs)


@pytest.mark.parametrize(
    "text",
    [
        "a b a b a b a b",
        "哈哈 哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈 北京北京北京",
        "Answer 12: 0cc175b9c0f1b6a831c399e269772661 92eb5ffee6ae2fec3ad71c777531578f",
        "The cat sat.\nThe cat sat.\tThe cat sat on the mat, the cat sat.",
        "x",
    ],
)
@pytest.mark.parametrize("n", [1, 3, 5])
def test_the_fast_checks_agree_with_their_plain_definitions(text, n):
    assert h.repeated_ngram_share(text, n) == pytest.approx(_slow_repeated_share(text, n))
    prompt = "Tell me: " + text[: len(text) // 2] + " and more words to compare"
    share = _slow_containment(text, prompt)
    got = h.check_echo(text, prompt=prompt, threshold=max(share, 0.01))
    if len(" ".join(text.lower().split())) * 2 >= len(" ".join(prompt.lower().split())):
        assert (got is not None) == (share >= max(share, 0.01))
        assert h.check_echo(text, prompt=prompt, threshold=share + 0.001) is None


def test_refusal_phrases_are_matched_after_folding_whatever_the_list():
    assert h.check_refusal("I CAN\u2019T help", phrases=["i can't"]) is not None
    assert h.check_refusal("I CAN\u2019T help", phrases=["as an ai"]) is None
    assert h.check_refusal("As an AI, no.", phrases=["", "As an  AI"]) is not None
