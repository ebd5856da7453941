"""Speed and cost: latency percentiles, tokens per second and $ per 1k requests.

API models: each request's measured prompt and completion tokens times the teacher's prices
(USD per million tokens). Local models: the GPU time a request takes at the measured throughput
times a GPU-hour price (the DISTILLERY_GPU_HOUR_USD setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RequestMeasure:
    seconds: float  # wall time of the request (or of its share of a batch)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Perf:
    n: int
    latency_p50: float
    latency_p95: float
    tokens_per_second: float  # completion tokens over the summed request time

    def as_dict(self) -> dict[str, float]:
        return {
            "n": self.n,
            "latency_p50_s": self.latency_p50,
            "latency_p95_s": self.latency_p95,
            "tokens_per_second": self.tokens_per_second,
        }


def perf_summary(measures: Sequence[RequestMeasure], *, wall_seconds: float | None = None) -> Perf:
    """Latency p50/p95 (linear interpolation) and throughput. For batched generation pass the
    batch's `wall_seconds`: throughput is then completion tokens over that wall time, not over
    the summed (overlapping) request times."""
    if not measures:
        nan = float("nan")
        return Perf(0, nan, nan, nan)
    seconds = np.array([m.seconds for m in measures], dtype=np.float64)
    tokens = sum(m.completion_tokens for m in measures)
    elapsed = wall_seconds if wall_seconds is not None else float(seconds.sum())
    p50, p95 = np.percentile(seconds, [50, 95])
    return Perf(
        n=len(measures),
        latency_p50=float(p50),
        latency_p95=float(p95),
        tokens_per_second=tokens / elapsed if elapsed > 0 else float("nan"),
    )


def api_cost_per_1k(
    measures: Sequence[RequestMeasure],
    *,
    input_usd_per_mtok: float,
    output_usd_per_mtok: float,
) -> float:
    """USD per 1,000 requests at the mean measured tokens per request."""
    if not measures:
        return float("nan")
    per_request = sum(
        m.prompt_tokens * input_usd_per_mtok + m.completion_tokens * output_usd_per_mtok
        for m in measures
    ) / (len(measures) * 1_000_000)
    return per_request * 1000


def local_cost_per_1k(
    measures: Sequence[RequestMeasure], *, tokens_per_second: float, gpu_hour_usd: float
) -> float:
    """USD per 1,000 requests: the GPU seconds a mean request's completion tokens take at the
    measured throughput, priced by the GPU hour."""
    if not measures or tokens_per_second <= 0:
        return float("nan")
    mean_tokens = sum(m.completion_tokens for m in measures) / len(measures)
    return mean_tokens / tokens_per_second / 3600.0 * gpu_hour_usd * 1000
