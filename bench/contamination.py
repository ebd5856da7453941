"""Contamination check at scale: 100k training rows against 10k eval items, planted overlaps.

    taskset -c 0 .venv/bin/python bench/contamination.py [--train 100000] [--items 10000]

Measures `workers.engine.evaluation.contamination` (the code evaluation runs) and prints:
- seconds to index the eval items and to stream the training rows (target ≤ 30 s on one core);
- peak memory growth while doing so (the kernel's peak-RSS mark, reset before, minus RSS before);
- precision and recall on the planted overlaps: `--planted` eval items share a 13-gram with one
  training row (with its case and punctuation changed, which the normalisation must undo), and as
  many other items share only a 12-gram (which must not count);
- a baseline measured in the same run on a subset of the training rows: every training 13-gram
  as a tuple of strings in one Python set (no hashing, nothing streamed), its time and memory on
  that subset against the index's on the same subset, and both ratios.

Not a timed test; needs no Django.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.engine.evaluation.contamination import (  # noqa: E402
    ContaminationIndex,
    naive_contamination,
)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, so the peak measured next
    is that of the code under test, not of making the data. False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_words(rng: np.random.Generator, count: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size=count)
    words = {"".join(rng.choice(letters, size=n)) for n in lengths}
    return sorted(words)


def make_data(
    *, train: int, items: int, planted: int, seed: int
) -> tuple[list[str], list[tuple[int, str]], set[int], set[int]]:
    rng = np.random.default_rng(seed)
    words = np.array(make_words(rng, 30_000))
    train_rows = [rng.choice(words, size=int(rng.integers(60, 140))).tolist() for _ in range(train)]
    eval_tokens = [rng.choice(words, size=int(rng.integers(40, 80))).tolist() for _ in range(items)]
    chosen = rng.choice(items, size=2 * planted, replace=False)
    planted_13 = {int(i) for i in chosen[:planted]}
    planted_12 = {int(i) for i in chosen[planted:]}
    for item in chosen:
        n = 13 if int(item) in planted_13 else 12
        toks = eval_tokens[int(item)]
        start = int(rng.integers(0, len(toks) - n))
        span = [
            w.capitalize() + ("," if j % 5 == 4 else "")
            for j, w in enumerate(toks[start : start + n])
        ]
        row = train_rows[int(rng.integers(0, train))]
        at = int(rng.integers(0, len(row)))
        row[at:at] = ["-"] + span + ["."]
    texts = [" ".join(row) for row in train_rows]
    eval_items = [(i, " ".join(toks)) for i, toks in enumerate(eval_tokens)]
    return texts, eval_items, planted_13, planted_12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--planted", type=int, default=500)
    parser.add_argument("--baseline-rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t = time.perf_counter()
    texts, items, planted_13, planted_12 = make_data(
        train=args.train, items=args.items, planted=args.planted, seed=args.seed
    )
    tokens_total = sum(t.count(" ") + 1 for t in texts)
    print(
        f"data: {len(texts):,} training rows ({tokens_total / len(texts):.0f} tokens each on "
        f"average, {tokens_total:,} in all), {len(items):,} eval items, "
        f"{len(planted_13)} planted 13-gram and {len(planted_12)} planted 12-gram overlaps "
        f"(made in {time.perf_counter() - t:.1f} s, not counted)"
    )

    gc.collect()
    if not reset_peak():
        print("(could not reset the peak-RSS mark: memory growth includes making the data)")
    before = rss_mb()
    t0 = t0_all = time.perf_counter()
    index = ContaminationIndex(items)
    t1 = time.perf_counter()
    index.scan(texts)
    report = index.report()
    t2 = time.perf_counter()
    growth = peak_mb() - before
    found = set(report.contaminated)
    tp = len(found & planted_13)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(planted_13) if planted_13 else 1.0
    print(
        f"hashed index: {t2 - t0:.2f} s in all (index {index.eval_ngrams:,} eval 13-grams "
        f"{t1 - t0:.2f} s, stream {t2 - t1:.2f} s = {len(texts) / (t2 - t1):,.0f} rows/s); "
        f"peak RSS growth {growth:.0f} MB"
    )
    print(
        f"planted: found {len(found)} items, precision {precision:.3f}, recall {recall:.3f}; "
        f"12-gram-only items flagged: {len(found & planted_12)} (must be 0)"
    )

    subset = texts[: args.baseline_rows]
    gc.collect()
    reset_peak()
    before = rss_mb()
    t0 = time.perf_counter()
    sub_index = ContaminationIndex(items)
    sub_index.scan(subset)
    fast_found = set(sub_index.report().contaminated)
    fast_s = time.perf_counter() - t0
    fast_growth = peak_mb() - before
    del sub_index
    gc.collect()
    reset_peak()
    before = rss_mb()
    t0 = time.perf_counter()
    naive_found = naive_contamination(items, subset)
    naive_s = time.perf_counter() - t0
    naive_growth = peak_mb() - before
    print(
        f"baseline on the first {len(subset):,} rows: Python set of tuple 13-grams "
        f"{naive_s:.2f} s, peak RSS growth {naive_growth:.0f} MB; hashed index "
        f"{fast_s:.2f} s, {fast_growth:.0f} MB; ratios: {naive_s / fast_s:.1f}x time, "
        f"{naive_growth / max(fast_growth, 1):.1f}x memory; same items: "
        f"{naive_found == fast_found} ({len(naive_found)})"
    )
    scale = len(texts) / len(subset)
    print(
        f"baseline scaled linearly to {len(texts):,} rows: ~{naive_s * scale:.0f} s and "
        f"~{naive_growth * scale:,.0f} MB, against {t2 - t0_all:.1f} s "
        f"and {growth:.0f} MB measured for the hashed index (index + stream + report)"
    )


if __name__ == "__main__":
    main()
