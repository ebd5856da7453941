"""Judge–human agreement: raw agreement and Cohen's kappa over items both labelled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    n: int
    raw: float  # share of items on which judge and human gave the same label
    kappa: float  # Cohen's kappa: (p_o - p_e) / (1 - p_e); nan without items


def cohen_kappa(judge: Sequence[Hashable], human: Sequence[Hashable]) -> Agreement:
    """Agreement between two raters over the same items (labels of any hashable kind).

    p_o is the observed agreement and p_e the agreement expected by chance from each rater's
    label frequencies. When both raters always give one and the same label, p_e is 1 and kappa
    is defined here as 1 (perfect, if uninformative, agreement).
    """
    if len(judge) != len(human):
        raise ValueError("judge and human labels must be aligned (same length)")
    n = len(judge)
    if n == 0:
        return Agreement(0, float("nan"), float("nan"))
    observed = sum(1 for a, b in zip(judge, human, strict=True) if a == b) / n
    judge_freq, human_freq = Counter(judge), Counter(human)
    expected = sum(judge_freq[label] * human_freq[label] for label in judge_freq) / (n * n)
    if expected >= 1.0:
        return Agreement(n, observed, 1.0 if observed == 1.0 else 0.0)
    return Agreement(n, observed, (observed - expected) / (1.0 - expected))
