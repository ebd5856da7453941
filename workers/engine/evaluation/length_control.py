"""The length-controlled win rate, in the manner of AlpacaEval 2 (without its instruction
difficulty term).

A logistic regression predicts the pairwise outcome from the length difference:

    P(candidate preferred) = sigmoid(b0 + b1 * tanh((len_candidate - len_baseline) / sd))

where `sd` is the standard deviation of the length differences over the items and the outcome is
1 (win), 0.5 (tie) or 0 (loss), fitted by cross-entropy on those soft labels. The
length-controlled win rate is the prediction at zero length difference, sigmoid(b0): how often the
judge would prefer the candidate if both answers were equally long. A small L2 penalty (1e-3 on the
mean loss, on both coefficients: a weak prior of "no preference, no length effect") keeps
the fit finite when the length alone separates the outcomes (a judge that always prefers the
longer answer). Newton's method in numpy; no scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WARNING_POINTS = 0.10  # raw and length-controlled rates further apart than this get a warning


@dataclass(frozen=True)
class LengthControlled:
    raw: float  # mean outcome, 0–1
    length_controlled: float  # sigmoid(b0), 0–1
    intercept: float
    length_coefficient: float
    n: int

    @property
    def warning(self) -> bool:
        """The judge's preference depends on length enough to move the rate by > 10 points."""
        return abs(self.raw - self.length_controlled) > WARNING_POINTS


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0))))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, steps: int = 50, tol: float = 1e-10
) -> tuple[float, float]:
    """(b0, b1) minimising the mean cross-entropy of sigmoid(b0 + b1 x) against soft labels y,
    plus l2/2 * (b0**2 + b1**2), by Newton's method."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    penalty = l2 * np.eye(2)
    n = float(len(x))
    for _ in range(steps):
        p = _sigmoid(design @ beta)
        grad = design.T @ (p - y) / n + penalty @ beta
        weights = p * (1.0 - p)
        hessian = (design * weights[:, None]).T @ design / n + penalty + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        beta = beta - step
        if float(np.abs(step).max()) < tol:
            break
    return float(beta[0]), float(beta[1])


def length_controlled_win_rate(
    outcomes: Sequence[float],
    candidate_lengths: Sequence[float],
    baseline_lengths: Sequence[float],
) -> LengthControlled:
    """The raw and length-controlled win rates of outcomes in {0, 0.5, 1} (ties as 0.5)."""
    y = np.asarray(outcomes, dtype=np.float64)
    if y.size == 0:
        return LengthControlled(float("nan"), float("nan"), 0.0, 0.0, 0)
    diff = np.asarray(candidate_lengths, dtype=np.float64) - np.asarray(
        baseline_lengths, dtype=np.float64
    )
    sd = float(diff.std())
    x = np.tanh(diff / sd) if sd > 0 else np.zeros_like(diff)
    b0, b1 = fit_logistic(x, y)
    return LengthControlled(
        raw=float(y.mean()),
        length_controlled=float(_sigmoid(np.array([b0]))[0]),
        intercept=b0,
        length_coefficient=b1,
        n=int(y.size),
    )
