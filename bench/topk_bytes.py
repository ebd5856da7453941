"""Stored bytes per generated token with top-20 log-probs (target: at most 100 bytes).

Three realistic cases, each against a naive JSON baseline measured in the same run:
- a local teacher with a 32k vocabulary (16-bit ids),
- a local teacher with a 152k vocabulary (32-bit ids, e.g. Qwen2.5 / Llama 3),
- an API teacher that returns token strings (OpenAI-style `top_logprobs`).
Alternatives are drawn from a Zipf-like distribution over the vocabulary (frequent tokens recur,
as they do in real top-k lists), log-probs are sorted and decay like a peaked softmax.

    .venv/bin/python bench/topk_bytes.py
"""

from __future__ import annotations

import json
import random
import string
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.engine import topk_format  # noqa: E402

K = 20
TOKENS_PER_COMPLETION = 400
COMPLETIONS = 20


def _logprobs(rng: np.random.Generator, t: int) -> np.ndarray:
    logits = rng.normal(0, 1, size=(t, K)) * 2.0
    logits[:, 0] += rng.uniform(2, 8, size=t)  # a confident top-1, as real models mostly are
    lp = logits - np.log(
        np.exp(logits).sum(axis=1, keepdims=True) + np.exp(rng.uniform(0, 3, size=(t, 1)))
    )
    return -np.sort(-lp, axis=1)


def _ids(rng: np.random.Generator, vocab: int, t: int, *, uniform: bool = False) -> np.ndarray:
    if uniform:  # worst case: no token ever recurs in the top-k
        return rng.integers(0, vocab, size=(t, K))
    ranks = np.minimum(rng.zipf(1.2, size=(t, K)), vocab) - 1
    perm = rng.permutation(vocab)
    return perm[ranks]


def case_ids(vocab: int, seed: int, *, uniform: bool = False) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    stored = naive = tokens = 0
    for _ in range(COMPLETIONS):
        ids = _ids(rng, vocab, TOKENS_PER_COMPLETION, uniform=uniform)
        lps = _logprobs(rng, TOKENS_PER_COMPLETION).astype(np.float16)
        record = topk_format.TopkRecord(ids[:, 0].copy(), ids, lps)
        stored += len(topk_format.encode(record))
        naive += len(
            json.dumps(
                [
                    [[int(i), float(lp)] for i, lp in zip(r_ids, r_lp, strict=True)]
                    for r_ids, r_lp in zip(ids, lps.astype(float), strict=True)
                ]
            )
        )
        tokens += TOKENS_PER_COMPLETION
    return stored, naive, tokens


def case_strings(seed: int) -> tuple[int, int, int]:
    rnd = random.Random(seed)
    vocab = [
        "".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(1, 7))) for _ in range(50_000)
    ]
    vocab = [(" " + w if rnd.random() < 0.6 else w) for w in vocab]
    rng = np.random.default_rng(seed)
    stored = naive = tokens = 0
    for _ in range(COMPLETIONS):
        ids = _ids(rng, len(vocab), TOKENS_PER_COMPLETION)
        lps = _logprobs(rng, TOKENS_PER_COMPLETION)
        toks = [[vocab[i] for i in row] for row in ids]
        record = topk_format.from_token_strings([row[0] for row in toks], toks, lps.tolist())
        stored += len(topk_format.encode(record))
        naive += len(
            json.dumps(
                [
                    {
                        "token": row[0],
                        "logprob": float(lp_row[0]),
                        "top_logprobs": [
                            {"token": t, "logprob": float(lp)}
                            for t, lp in zip(row, lp_row, strict=True)
                        ],
                    }
                    for row, lp_row in zip(toks, lps, strict=True)
                ]
            )
        )
        tokens += TOKENS_PER_COMPLETION
    return stored, naive, tokens


def main() -> None:
    print(f"top-{K} log-probs, {COMPLETIONS} completions x {TOKENS_PER_COMPLETION} tokens each")
    print(f"{'case':<34}{'bytes/token':>12}{'JSON baseline':>15}{'ratio':>8}   target <= 100")
    for name, (stored, naive, tokens) in (
        ("local teacher, 32k vocab (u16 ids)", case_ids(32_000, 1)),
        ("local teacher, 152k vocab (u32 ids)", case_ids(152_064, 2)),
        ("API teacher, token strings", case_strings(3)),
        ("worst case: uniform ids, 152k", case_ids(152_064, 4, uniform=True)),
    ):
        per = stored / tokens
        print(
            f"{name:<34}{per:>12.1f}{naive / tokens:>15.1f}{naive / stored:>7.1f}x   {'OK' if per <= 100 else 'OVER'}"
        )


if __name__ == "__main__":
    main()
