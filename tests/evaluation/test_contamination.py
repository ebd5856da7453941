"""Contamination: a planted 13-gram is found, a 12-gram is not, the normalisation is the harness's."""

from __future__ import annotations

from workers.engine.evaluation.contamination import (
    ContaminationIndex,
    find_contamination,
    naive_contamination,
    ngrams,
    tokens,
)

WORDS = [f"word{i}" for i in range(60)]
ITEM = " ".join(WORDS[:40])


def test_tokens_lowercase_delete_punctuation_and_split_on_whitespace():
    assert tokens("Don't STOP, believing!\n  now") == [b"dont", b"stop", b"believing", b"now"]


def test_a_planted_13_gram_is_found_with_case_and_punctuation_changed():
    planted = " ".join(w.upper() + "," for w in WORDS[10:23])
    report = find_contamination(
        [("item", ITEM), ("other", " ".join(WORDS[40:60]))],
        ["unrelated text " * 10, f"prefix {planted} suffix"],
    )
    assert report.contaminated_keys == ["item"]
    assert report.contaminated["item"] == [" ".join(WORDS[10:23])]
    assert report.training_rows == 2 and report.eval_items == 2


def test_a_planted_12_gram_is_not_contamination():
    report = find_contamination([("item", ITEM)], ["x " + " ".join(WORDS[10:22]) + " y"])
    assert report.contaminated == {}


def test_n_grams_never_span_two_training_texts():
    first, second = " ".join(WORDS[0:7]), " ".join(WORDS[7:13])
    index = ContaminationIndex([("item", ITEM)])
    index.scan([first, second], chunk_rows=10)
    assert index.report().contaminated == {}
    index.scan([first + " " + second])
    assert index.report().contaminated_keys == ["item"]


def test_items_shorter_than_13_tokens_are_never_flagged():
    short = " ".join(WORDS[:12])
    assert find_contamination([("short", short)], [short * 3]).contaminated == {}


def test_every_overlapping_n_gram_is_reported_once_and_scans_add_up_across_chunks():
    training = ["a b c " + " ".join(WORDS[0:14]), " ".join(WORDS[0:13])] + ["filler"] * 10
    index = ContaminationIndex([(1, ITEM), (2, ITEM)])
    index.scan(training, chunk_rows=3)
    report = index.report()
    assert sorted(report.contaminated) == [1, 2]
    assert report.contaminated[1] == [" ".join(WORDS[0:13]), " ".join(WORDS[1:14])]
    assert report.training_rows == 12


def test_the_index_agrees_with_the_naive_baseline():
    items = [(i, " ".join(WORDS[i : i + 20])) for i in range(30)]
    training = [" ".join(WORDS[5:18]), " ".join(WORDS[30:44]), "nothing here at all"]
    fast = set(find_contamination(items, training).contaminated)
    assert fast == naive_contamination(items, training)
    assert fast  # the constructed case does overlap
    assert ngrams("A b", n=1) == ["a", "b"]
