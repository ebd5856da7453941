"""Reference match: exact, normalised (SQuAD-style), numeric, and chrF (sacrebleu)."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# The last number in an answer: optional sign, thousands separators, decimals, exponent.
_NUMBER_STRICT = re.compile(
    r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+"
)


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, punctuation removed, articles (a, an, the) removed,
    whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    """Equal after stripping surrounding whitespace only."""
    return prediction.strip() == reference.strip()


def normalised_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


def final_number(text: str) -> float | None:
    """The last number written in the text ("... so the answer is 1,234.5." → 1234.5)."""
    found = _NUMBER_STRICT.findall(text)
    if not found:
        return None
    try:
        value = float(found[-1].replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numeric_match(
    prediction: str, reference: str, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9
) -> bool:
    """The final numbers of prediction and reference are equal within the tolerances; False
    when either has no number."""
    want = final_number(reference)
    got = final_number(prediction)
    if want is None or got is None:
        return False
    return math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol)


def chrf(prediction: str, reference: str) -> float:
    """Sentence chrF (sacrebleu defaults: character 6-grams, beta 2), 0–100."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(prediction, [reference]).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF over aligned predictions and references, 0–100."""
    from sacrebleu.metrics import CHRF

    if not predictions:
        return 0.0
    return float(CHRF().corpus_score(list(predictions), [list(references)]).score)


def reference_scores(prediction: str, reference: str) -> dict[str, float]:
    """Every reference metric for one answer: exact, normalised, numeric as 0/1, chrF 0–100."""
    return {
        "exact_match": float(exact_match(prediction, reference)),
        "normalised_match": float(normalised_match(prediction, reference)),
        "numeric_match": float(numeric_match(prediction, reference)),
        "chrf": chrf(prediction, reference),
    }
