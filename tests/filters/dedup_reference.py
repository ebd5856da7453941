"""The in-memory duplicate index the filter pipeline used before its state moved to a scratch
database (`distillapp.filters.dedup_store`): every array in memory, resolved with numpy. Kept
here as the reference the store must agree with, group for group."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from distillapp.filters.dedup import (
    _UnionFind,
    band_keys,
    band_pairs,
    lsh_bands,
    minhash_signatures,
    shingle_hashes,
    shingles,
)

EXACT = 1
NEAR = 2
# Rank classes for picking the kept one of a group: the lowest (class, id) is kept.
RANK_KEPT = 0  # outside this run, already kept (passed, restored, awaiting the judge)
RANK_CLEAN = 1  # failed no other filter, or outside this run and not checked yet
RANK_OTHER = 2  # failed another filter, or outside this run and filtered out
# Texts fetched at once to check candidate pairs: their shingle sets (~25 kB for 300
# characters) are the largest transient memory of a run, bounded by this.
_VERIFY_TEXTS = 500


def text_hash64(text: str) -> int:
    """The first 8 bytes of the text's SHA-256: at a million texts a false match has a chance of
    about 3e-8, so exact duplicates keep 8 bytes per text instead of the text."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


@dataclass
class Duplicates:
    """The texts found to be duplicates, sorted by id: for each, EXACT or NEAR, the first
    identical text (exact), the text kept for the group, and the Jaccard similarity to it."""

    ids: np.ndarray
    kind: np.ndarray
    first: np.ndarray
    keeper: np.ndarray
    similarity: np.ndarray
    in_scope: np.ndarray

    def get(self, item_id: int) -> tuple[int, int, int, float] | None:
        at = int(np.searchsorted(self.ids, item_id))
        if at < len(self.ids) and int(self.ids[at]) == item_id:
            return (
                int(self.kind[at]),
                int(self.first[at]),
                int(self.keeper[at]),
                float(self.similarity[at]),
            )
        return None

    def contains(self, item_ids: np.ndarray) -> np.ndarray:
        """A boolean per id of `item_ids`: whether it is a duplicate (one search for all)."""
        if len(self.ids) == 0:
            return np.zeros(len(item_ids), dtype=np.bool_)
        at = np.minimum(np.searchsorted(self.ids, item_ids), len(self.ids) - 1)
        return np.asarray(self.ids[at] == item_ids)

    def __len__(self) -> int:
        return len(self.ids)


class DedupIndex:
    """Exact and near duplicates over any number of texts added in batches, keeping only compact
    state per text: id, group key (the prompt), rank class, in-scope bit, an 8-byte hash and one
    4-byte key per LSH band (16 bands at the default threshold): `BYTES_PER_ITEM` in all.

    `resolve` finds the groups; candidate pairs are checked by exact Jaccard on texts fetched
    again by id (`fetch_texts`), so memory grows with the number of duplicates, not of texts.
    Without `within_group`, two texts of the same group (a prompt's samples) are never linked.
    """

    def __init__(
        self,
        *,
        exact: bool,
        near: bool,
        threshold: float = 0.8,
        within_group: bool = False,
        capacity: int = 1024,
        num_perm: int = 128,
        shingle: int = 5,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.exact, self.near = exact, near
        self.threshold, self.within_group = threshold, within_group
        self.num_perm, self.shingle = num_perm, shingle
        # Candidates at a lower threshold, then the exact check: recall near the threshold
        # without giving up precision.
        self.lsh_threshold = max(0.3, threshold - 0.15)
        self.n_bands = len(lsh_bands(self.lsh_threshold, num_perm)) if near else 0
        self.n = 0
        capacity = max(capacity, 16)
        self.ids = np.empty(capacity, dtype=np.int64)
        self.groups = np.empty(capacity, dtype=np.int64)
        self.rank = np.empty(capacity, dtype=np.int8)
        self.in_scope = np.empty(capacity, dtype=np.bool_)
        self.hashes = np.empty(capacity if exact else 0, dtype=np.uint64)
        self.bands = np.empty((capacity if near else 0, self.n_bands), dtype=np.uint32)

    @property
    def bytes_per_item(self) -> int:
        return 8 + 8 + 1 + 1 + (8 if self.exact else 0) + 4 * self.n_bands

    def _grow(self, need: int) -> None:
        size = len(self.ids)
        if need <= size:
            return
        size = max(need, size * 2)
        self.ids = np.resize(self.ids, size)
        self.groups = np.resize(self.groups, size)
        self.rank = np.resize(self.rank, size)
        self.in_scope = np.resize(self.in_scope, size)
        if self.exact:
            self.hashes = np.resize(self.hashes, size)
        if self.near:
            bands = np.empty((size, self.n_bands), dtype=np.uint32)
            bands[: self.n] = self.bands[: self.n]
            self.bands = bands

    def add(
        self,
        ids: Sequence[int],
        groups: Sequence[int],
        ranks: Sequence[int],
        texts: Sequence[str],
        *,
        in_scope: bool,
    ) -> None:
        """Add a batch; empty (whitespace-only) texts are left out: they duplicate nothing."""
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if not keep:
            return
        lo, hi = self.n, self.n + len(keep)
        self._grow(hi)
        self.ids[lo:hi] = [ids[i] for i in keep]
        self.groups[lo:hi] = [groups[i] for i in keep]
        self.rank[lo:hi] = [ranks[i] for i in keep]
        self.in_scope[lo:hi] = in_scope
        kept_texts = [texts[i] for i in keep]
        if self.exact:
            self.hashes[lo:hi] = [text_hash64(t) for t in kept_texts]
        if self.near:
            hashes, first, kept = shingle_hashes(kept_texts, self.shingle)
            sigs = minhash_signatures(hashes, first, self.num_perm)
            # A non-empty text always has a shingle, so every text of the batch has a signature.
            assert len(kept) == len(kept_texts)
            # The low 32 bits of each 64-bit band key: a few more chance candidates, all
            # removed by the exact check, for half the memory.
            self.bands[lo:hi] = band_keys(sigs, self.lsh_threshold, self.num_perm).astype(np.uint32)
        self.n = hi

    def resolve(self, fetch_texts: Callable[[Sequence[int]], dict[int, str]]) -> Duplicates:
        n = self.n
        ids = self.ids[:n]
        order_key = (self.rank[:n].astype(np.int64) << 56) + ids
        # Row indices fit 32 bits: 4 bytes per text for each of these two.
        exact_first = np.full(n, -1, dtype=np.int32)  # row of the exact group's kept text
        if self.exact and n > 1:
            hashes = self.hashes[:n]
            o = np.lexsort((order_key, hashes))
            sorted_hashes = hashes[o]
            starts = np.concatenate(([True], sorted_hashes[1:] != sorted_hashes[:-1]))
            first_of_run = o[starts][np.cumsum(starts) - 1]
            exact_first[o[~starts]] = first_of_run[~starts]
            # Freed before the near-duplicate pass, which is where memory peaks.
            del o, sorted_hashes, starts, first_of_run
        near_keeper = np.full(n, -1, dtype=np.int32)
        similarity = np.zeros(n, dtype=np.float32)
        if self.near and n > 1:
            reps = np.flatnonzero(exact_first < 0)
            self._near(reps, order_key, near_keeper, similarity, fetch_texts)
        dup = np.flatnonzero((exact_first >= 0) | (near_keeper >= 0))
        kind = np.where(exact_first[dup] >= 0, EXACT, NEAR).astype(np.int8)
        first_row = np.where(exact_first[dup] >= 0, exact_first[dup], near_keeper[dup])
        # An exact copy of a text that is itself a near duplicate goes with that text's keeper.
        final_row = np.where(near_keeper[first_row] >= 0, near_keeper[first_row], first_row)
        out = Duplicates(
            ids=ids[dup],
            kind=kind,
            first=ids[first_row],
            keeper=ids[final_row],
            similarity=np.where(kind == EXACT, 1.0, similarity[dup]).astype(np.float32),
            in_scope=self.in_scope[:n][dup],
        )
        order = np.argsort(out.ids, kind="stable")
        return Duplicates(
            out.ids[order],
            out.kind[order],
            out.first[order],
            out.keeper[order],
            out.similarity[order],
            out.in_scope[order],
        )

    def _near(
        self,
        reps: np.ndarray,
        order_key: np.ndarray,
        near_keeper: np.ndarray,
        similarity: np.ndarray,
        fetch_texts: Callable[[Sequence[int]], dict[int, str]],
    ) -> None:
        groups = self.groups
        # Band by band, each gathered alone (4 bytes per row), so the temporaries of grouping
        # are one band's, not a copy of all bands at once.
        found: set[tuple[int, int]] = set()
        all_rows = len(reps) == self.n
        for b in range(self.n_bands):
            band_pairs(self.bands[: self.n, b] if all_rows else self.bands[reps, b], found)
        candidates = [
            (int(reps[a]), int(reps[b]))
            for a, b in found
            if self.within_group or groups[reps[a]] != groups[reps[b]]
        ]
        del found
        uf = _UnionFind()
        for (i, j), sim in self._jaccard_pairs(sorted(candidates), fetch_texts):
            if sim >= self.threshold:
                uf.union(i, j)
        flagged: list[tuple[int, int]] = []
        for members in uf.groups(uf.nodes):
            keeper = min(members, key=lambda m: int(order_key[m]))
            for m in members:
                # Across prompts only: the kept text's own samples stay, best-of-n picks later.
                if m != keeper and (self.within_group or groups[m] != groups[keeper]):
                    near_keeper[m] = keeper
                    flagged.append((m, keeper))
        for (m, _keeper), sim in self._jaccard_pairs(flagged, fetch_texts):
            similarity[m] = sim

    def _jaccard_pairs(
        self,
        pairs: list[tuple[int, int]],
        fetch_texts: Callable[[Sequence[int]], dict[int, str]],
    ) -> Iterable[tuple[tuple[int, int], float]]:
        """Exact Jaccard similarity of each pair of rows, fetching texts a chunk at a time."""
        ids = self.ids
        at = 0
        while at < len(pairs):
            chunk: list[tuple[int, int]] = []
            need: set[int] = set()
            while at < len(pairs) and len(need) < _VERIFY_TEXTS:
                i, j = pairs[at]
                chunk.append((i, j))
                need.update((int(ids[i]), int(ids[j])))
                at += 1
            texts = fetch_texts(sorted(need))
            sets = {k: shingles(t, self.shingle) for k, t in texts.items()}
            for i, j in chunk:
                si, sj = sets.get(int(ids[i]), set()), sets.get(int(ids[j]), set())
                union = len(si | sj)
                yield (i, j), (len(si & sj) / union if union else 0.0)
