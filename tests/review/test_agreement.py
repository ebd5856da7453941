from __future__ import annotations

import pytest

from distillapp.review.agreement import cohen_kappa, fleiss_kappa


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 → p_o 0.7, p_e 0.5, κ 0.4.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)


def test_cohen_kappa_of_a_small_hand_computed_case():
    # p_o = 3/4; A: y 2, n 2; B: y 3, n 1 → p_e = (2·3 + 2·1)/16 = 0.5 → κ = 0.5.
    pairs = [("y", "y"), ("y", "y"), ("n", "y"), ("n", "n")]
    assert cohen_kappa(pairs) == pytest.approx(0.5)


def test_cohen_kappa_is_minus_one_for_perfect_disagreement_and_none_when_undefined():
    assert cohen_kappa([("y", "n"), ("n", "y")]) == pytest.approx(-1.0)
    assert cohen_kappa([("y", "y"), ("y", "y")]) is None
    assert cohen_kappa([]) is None


def test_fleiss_kappa_matches_the_textbook_example():
    # 10 subjects, 14 raters, 5 categories (Fleiss 1971 as in Wikipedia): κ ≈ 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)


def test_fleiss_kappa_of_a_small_hand_computed_case():
    # 3 raters, 2 items: [3,0] → P=1; [1,2] → P=(1+4-3)/6=1/3; P̄=2/3.
    # p = (4/6, 2/6) → P̄e = 16/36 + 4/36 = 5/9 → κ = (2/3 − 5/9)/(4/9) = 1/4.
    assert fleiss_kappa([[3, 0], [1, 2]]) == pytest.approx(0.25)


def test_fleiss_kappa_refuses_uneven_rows_and_is_none_when_undefined():
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 2]])
    assert fleiss_kappa([[3, 0], [3, 0]]) is None
    assert fleiss_kappa([]) is None
