"""Inter-rater agreement: Cohen's kappa for two raters, Fleiss' kappa for more.

Both return None where kappa is undefined (no items, or chance agreement is 1 because every
rating fell in one category).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa for one (rater A, rater B) category pair per item.

    κ = (p_o − p_e) / (1 − p_e), p_o the observed agreement, p_e = Σ_c p_A(c)·p_B(c)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(1 for a, b in pairs if a == b) / n
    count_a = Counter(a for a, _ in pairs)
    count_b = Counter(b for _, b in pairs)
    expected = sum(count_a[c] * count_b[c] for c in set(count_a) | set(count_b)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items × categories table of rating counts; every row sums to n raters.

    P_i = (Σ_j n_ij² − n) / (n(n − 1)); P̄ = mean P_i; p_j = Σ_i n_ij / (N·n); P̄_e = Σ_j p_j²;
    κ = (P̄ − P̄_e) / (1 − P̄_e)."""
    rows = [list(r) for r in table]
    if not rows:
        return None
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        raise ValueError("Every item needs the same number (≥ 2) of ratings.")
    big_n = len(rows)
    p_bar = sum((sum(x * x for x in r) - n) / (n * (n - 1)) for r in rows) / big_n
    categories = len(rows[0])
    p_j = [sum(r[j] for r in rows) / (big_n * n) for j in range(categories)]
    p_e = sum(p * p for p in p_j)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1.0 - p_e)
