"""Contamination: 13-gram overlap between eval items and training texts.

N-grams as lm-evaluation-harness's decontamination (its janitor) defines them: the text is
lowercased, ASCII punctuation is deleted (so "don't" becomes "dont"), and the rest is split on
whitespace; an n-gram is n consecutive tokens of one text (never across two texts). An eval item
is contaminated when any of its 13-grams occurs in any training text. An item of fewer than 13
tokens has no 13-gram and is never flagged.

Built to stream: the eval items are indexed once (their 13-grams as 64-bit hashes in a sorted
numpy array), then training texts are read in chunks and never kept. Tokens map to ids over the
eval items' vocabulary only: a training token the eval items never use cannot be part of a shared
13-gram, so every window holding one is skipped, and memory stays bounded by the eval side
whatever the training corpus. Each window's hash is a polynomial over 64-bit random token codes,
computed with vectorised numpy arithmetic (wrapping mod 2**64); membership is a binary search.
At 10k items × 100M training windows a false match by hash collision has a probability of
about 1e-5; the reported n-grams are read back from the eval item's own text.
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Generic, TypeVar

import numpy as np

N = 13
_DELETE = string.punctuation.encode()
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial hash
_BITMAP = 1 << 23  # bits of the prefilter (8 MB of bools)
K = TypeVar("K", bound=Hashable)


def tokens(text: str) -> list[bytes]:
    """The harness's normalisation: lowercase, ASCII punctuation deleted, split on whitespace.

    Works on UTF-8 bytes (deleting ASCII bytes never splits a multi-byte character), which is
    what makes streaming 100k rows cheap."""
    return text.lower().encode("utf-8", "surrogatepass").translate(None, _DELETE).split()


def ngrams(text: str, n: int = N) -> list[str]:
    """The text's n-grams as space-joined strings (for reading; the index hashes them)."""
    toks = [t.decode("utf-8", "replace") for t in tokens(text)]
    return [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def _window_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every window of n consecutive codes (len(codes) - n + 1 of them)."""
    count = len(codes) - n + 1
    out = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            out *= _MULT
            out += codes[j : j + count]
    return out


@dataclass
class ContaminationReport(Generic[K]):
    n: int
    eval_items: int
    training_rows: int
    # contaminated item key -> its n-grams (text) that occur in training texts
    contaminated: dict[K, list[str]] = field(default_factory=dict)

    @property
    def contaminated_keys(self) -> list[K]:
        return list(self.contaminated)

    @property
    def rate(self) -> float:
        return len(self.contaminated) / self.eval_items if self.eval_items else 0.0


class ContaminationIndex(Generic[K]):
    """The eval items' n-grams, ready to be matched against streamed training texts.

    index = ContaminationIndex((item.id, item.text) for item in items)
    index.scan(row.text for row in training_rows)   # may be called several times
    report = index.report()
    """

    def __init__(self, items: Iterable[tuple[K, str]], *, n: int = N, seed: int = 0) -> None:
        self.n = n
        self._keys: list[K] = []
        self._texts: list[str] = []  # the callers' strings, re-read only for contaminated items
        all_tokens: list[bytes] = []
        lengths: list[int] = []
        for key, text in items:
            toks = tokens(text)
            self._keys.append(key)
            self._texts.append(text)
            lengths.append(len(toks))
            all_tokens.extend(toks)
        # Ids from 1 in order of first use; 0 is every token the eval items never use.
        self._vocab: dict[bytes, int] = {
            tok: i for i, tok in enumerate(dict.fromkeys(all_tokens), 1)
        }
        rng = np.random.default_rng(seed)
        self._codes = rng.integers(1, 2**63, size=len(self._vocab) + 1, dtype=np.uint64)
        self._codes[0] = 0
        ids, rows = self._ids(all_tokens, lengths)
        del all_tokens
        self._offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        starts = np.flatnonzero(self._valid(ids, rows))
        self._item_hashes = (
            _window_hashes(self._codes[ids], n)[starts]
            if len(ids) >= n
            else (np.zeros(0, dtype=np.uint64))
        )
        self._item_starts = starts
        self._item_owner = rows[starts]
        self._sorted = np.unique(self._item_hashes)
        # A bitmap on the low hash bits answers "surely absent" for most training windows
        # before the binary search (a few per cent of them get that far).
        self._bits = np.zeros(_BITMAP, dtype=np.bool_)
        self._bits[self._sorted & np.uint64(_BITMAP - 1)] = True
        self._matched: list[np.ndarray] = []
        self.training_rows = 0

    @property
    def eval_ngrams(self) -> int:
        return int(self._sorted.size)

    def _ids(self, all_tokens: list[bytes], lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (0: unknown to the eval side) and each token's text number."""
        ids = np.fromiter(
            map(self._vocab.get, all_tokens, repeat(0)), dtype=np.int64, count=len(all_tokens)
        )
        rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        return ids, rows

    def _valid(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Window starts that lie within one text and hold no token unknown to the eval side."""
        n = self.n
        count = len(ids) - n + 1
        if count <= 0:
            return np.zeros(0, dtype=np.bool_)
        unknown = np.concatenate(([0], np.cumsum(ids == 0)))
        return np.asarray((rows[:count] == rows[n - 1 :]) & (unknown[n:] == unknown[:count]))

    def _scan_chunk(self, texts: list[str]) -> None:
        all_tokens: list[bytes] = []
        lengths: list[int] = []
        for text in texts:
            toks = tokens(text)
            lengths.append(len(toks))
            all_tokens.extend(toks)
        self.training_rows += len(texts)
        if len(all_tokens) < self.n or self._sorted.size == 0:
            return
        ids, rows = self._ids(all_tokens, lengths)
        valid = self._valid(ids, rows)
        if not valid.any():
            return
        hashes = _window_hashes(self._codes[ids], self.n)[valid]
        hashes = hashes[self._bits[hashes & np.uint64(_BITMAP - 1)]]
        at = np.searchsorted(self._sorted, hashes)
        at[at == self._sorted.size] = 0
        hits = hashes[self._sorted[at] == hashes]
        if hits.size:
            self._matched.append(np.unique(hits))

    def scan(self, texts: Iterable[str], *, chunk_rows: int = 4096) -> None:
        """Stream training texts through the index, `chunk_rows` at a time."""
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) >= chunk_rows:
                self._scan_chunk(chunk)
                chunk = []
        if chunk:
            self._scan_chunk(chunk)

    def report(self) -> ContaminationReport[K]:
        out: ContaminationReport[K] = ContaminationReport(
            self.n, len(self._keys), self.training_rows
        )
        if not self._matched:
            return out
        matched = np.unique(np.concatenate(self._matched))
        hit = np.flatnonzero(np.isin(self._item_hashes, matched))
        grams: dict[int, dict[str, None]] = {}
        for at in hit.tolist():
            owner = int(self._item_owner[at])
            local = int(self._item_starts[at] - self._offsets[owner])
            toks = tokens(self._texts[owner])[local : local + self.n]
            grams.setdefault(owner, {})[b" ".join(toks).decode("utf-8", "replace")] = None
        for owner in sorted(grams):
            out.contaminated[self._keys[owner]] = list(grams[owner])
        return out


def find_contamination(
    items: Iterable[tuple[K, str]], training_texts: Iterable[str], *, n: int = N
) -> ContaminationReport[K]:
    """The eval items (key, text) that share an n-gram with any training text, and those n-grams."""
    index: ContaminationIndex[K] = ContaminationIndex(items, n=n)
    index.scan(training_texts)
    return index.report()


def naive_contamination(
    items: Iterable[tuple[K, str]], training_texts: Iterable[str], *, n: int = N
) -> set[K]:
    """The baseline the bench compares against: every training n-gram as a tuple of strings in
    one Python set (no hashing to integers, nothing streamed). Same answer, far more memory."""
    seen: set[tuple[bytes, ...]] = set()
    for text in training_texts:
        toks = tokens(text)
        seen.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    out: set[K] = set()
    for key, text in items:
        toks = tokens(text)
        if any(tuple(toks[i : i + n]) in seen for i in range(len(toks) - n + 1)):
            out.add(key)
    return out
