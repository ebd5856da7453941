"""Small statistics shared by the metrics: a seeded percentile bootstrap."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic (the mean unless given) over items.

    Items are resampled with replacement `resamples` times from a generator seeded with `seed`,
    so the same values give the same interval. `statistic` takes a (resamples, n) array and
    returns one value per row. Empty input gives (nan, nan).
    """
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(resamples, data.size))
    samples = data[idx]
    stats = samples.mean(axis=1) if statistic is None else statistic(samples)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def stderr_of_mean(values: Sequence[float] | np.ndarray) -> float:
    """The standard error of the mean (sample sd / sqrt n); 0 for fewer than two values."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return 0.0
    return float(data.std(ddof=1) / np.sqrt(data.size))
