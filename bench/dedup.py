"""Near-duplicate detection at scale: 100k completions with planted near-duplicates.

    .venv/bin/python bench/dedup.py [--n 100000] [--pairs 5000] [--threshold 0.8]

Measures `distillapp.filters.dedup.near_duplicate_groups` (the code the filters run) and prints:
- its wall time (target ≤ 30 s for 100k);
- precision and recall on the planted pairs, truth being their exact Jaccard similarity
  (character 5-gram shingles of the normalised text) against the threshold; precision counts
  every pair inside an output group, so chained groups are charged for their weakest pair
  (targets: precision ≥ 0.95, recall ≥ 0.9);
- for context, precision and recall against brute-force exact Jaccard over all pairs of a
  sample (which also catches near-duplicates nobody planted);
- a baseline measured in the same run: datasketch used as its README shows (a MinHash per text,
  `update_batch` over SHA-1-hashed shingles, `MinHashLSH.insert` + `query`) on a sample,
  scaled linearly to n, and the speed-up ratio against it.

Not a timed test; needs no Django.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distillapp.filters import dedup  # noqa: E402


def make_corpus(n: int, pairs: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """n texts; `pairs` of them are edited copies of an earlier one (1–12 word edits each)."""
    rng = random.Random(seed)
    syllables = [
        "ka",
        "lo",
        "mi",
        "ter",
        "an",
        "so",
        "vel",
        "ri",
        "dun",
        "ex",
        "pra",
        "to",
        "ul",
        "ben",
        "zo",
        "que",
    ]
    vocab = sorted(
        {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(20000)}
    )
    texts: list[str] = []
    for _ in range(n - pairs):
        words = [rng.choice(vocab) for _ in range(rng.randint(25, 90))]
        texts.append(" ".join(words).capitalize() + ".")
    planted = []
    for _ in range(pairs):
        src = rng.randrange(n - pairs)
        words = texts[src].split()
        for _ in range(rng.randint(1, 12)):
            op = rng.random()
            pos = rng.randrange(len(words))
            if op < 0.5:
                words[pos] = rng.choice(vocab)
            elif op < 0.75 and len(words) > 5:
                del words[pos]
            else:
                words.insert(pos, rng.choice(vocab))
        planted.append((src, len(texts)))
        texts.append(" ".join(words))
    order = list(range(n))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    shuffled = [texts[old] for old in order]
    return shuffled, [tuple(sorted((where[a], where[b]))) for a, b in planted]


def group_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for a, b in itertools.combinations(sorted(g), 2)}


def datasketch_baseline(texts: list[str], threshold: float) -> float:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    minhashes = []
    for i, text in enumerate(texts):
        m = MinHash(num_perm=128)
        m.update_batch([s.encode("utf-8") for s in dedup.shingles(text)])
        lsh.insert(i, m)
        minhashes.append(m)
    for m in minhashes:
        lsh.query(m)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=5_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--sample", type=int, default=800, help="texts in the brute-force sample")
    parser.add_argument("--baseline-sample", type=int, default=5_000)
    args = parser.parse_args()

    texts, planted = make_corpus(args.n, args.pairs)
    chars = sum(map(len, texts))
    print(
        f"corpus: {len(texts)} texts, {chars / len(texts):.0f} chars on average, {len(planted)} planted pairs"
    )

    start, cpu_start = time.perf_counter(), time.process_time()
    groups = dedup.near_duplicate_groups(texts, threshold=args.threshold)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    found = group_pairs(groups)
    print(
        f"near_duplicate_groups: {elapsed:.2f} s wall ({cpu:.2f} s CPU) for {len(texts)} texts ({len(groups)} groups, {len(found)} pairs in groups)"
    )

    similarity = {p: dedup.jaccard(texts[p[0]], texts[p[1]]) for p in planted}
    positives = {p for p, j in similarity.items() if j >= args.threshold}
    true_found = {
        p
        for p in found
        if (similarity[p] if p in similarity else dedup.jaccard(texts[p[0]], texts[p[1]]))
        >= args.threshold
    }
    precision = len(true_found) / len(found) if found else 1.0
    recall = len(positives & found) / len(positives) if positives else 1.0
    print(
        f"planted pairs: {len(positives)} at Jaccard >= {args.threshold}, {len(planted) - len(positives)} below; "
        f"precision {precision:.4f}, recall {recall:.4f}"
    )

    # Brute force on a sample: both halves of some planted pairs plus random texts.
    rng = random.Random(1)
    members = {i for p in rng.sample(planted, min(len(planted), args.sample // 4)) for i in p}
    members |= set(rng.sample(range(len(texts)), args.sample - len(members)))
    sample = sorted(members)
    shingle_sets = {i: dedup.shingles(texts[i]) for i in sample}
    start = time.perf_counter()
    truth = {
        (a, b)
        for a, b in itertools.combinations(sample, 2)
        if len(shingle_sets[a] & shingle_sets[b]) / len(shingle_sets[a] | shingle_sets[b])
        >= args.threshold
    }
    brute = time.perf_counter() - start
    in_sample = {p for p in found if p[0] in members and p[1] in members}
    s_precision = len(in_sample & truth) / len(in_sample) if in_sample else 1.0
    s_recall = len(in_sample & truth) / len(truth) if truth else 1.0
    print(
        f"brute-force sample: {len(sample)} texts, {len(sample) * (len(sample) - 1) // 2} pairs in {brute:.1f} s, "
        f"{len(truth)} true pairs; precision {s_precision:.4f}, recall {s_recall:.4f}"
    )

    base_n = min(args.baseline_sample, len(texts))
    base = datasketch_baseline(texts[:base_n], args.threshold)
    scaled = base * len(texts) / base_n
    print(
        f"baseline (datasketch MinHash.update_batch + MinHashLSH insert/query): {base:.2f} s for {base_n} texts, "
        f"~{scaled:.1f} s scaled to {len(texts)}; speed-up x{scaled / elapsed:.1f}"
    )
    ok = elapsed <= 30 and precision >= 0.95 and recall >= 0.9
    print(f"targets (<= 30 s, precision >= 0.95, recall >= 0.9): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
