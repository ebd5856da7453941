"""Duplicate detection among completions: exact by hash, near by MinHash LSH (datasketch).

Plain functions over sequences of strings, with no Django, so `bench/dedup.py` measures the
code the filters run.

Near duplicates:
- texts are normalised (lower case, runs of whitespace collapsed) and cut into character
  `shingle`-grams (a text shorter than that is one shingle);
- each shingle gets a 32-bit hash; MinHash signatures use datasketch's `affine32` scheme
  (MurmurHash3 finaliser, then `a * h + b mod 2**32` per permutation), computed with numpy over
  all shingles of all texts at once. They are bit-for-bit what `datasketch.MinHash(scheme=
  "affine32", hashfunc=shingle_hash32).update(...)` gives, which a test checks, and go into a
  `datasketch.MinHashLSH` as `LeanMinHash`es;
- LSH runs at a lower threshold than asked, so pairs just above the threshold are rarely missed,
  and every candidate pair is then checked by the exact Jaccard similarity of its shingle sets;
- verified pairs are joined with union-find: a group is a connected component, so A~B and B~C
  put A, B and C in one group even when A and C are less similar.

A filter run uses these over the whole project a batch at a time, with its per-text state in a
scratch database instead of memory: `distillapp.filters.dedup_store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

SCHEME = "affine32"
SEED = 1
_P = np.uint64(0x9E3779B97F4A7C15)  # 2^64/golden ratio: polynomial base; its high bits mix well
_MIX1 = np.uint64(0xFF51AFD7ED558CCD)
_MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)
# Shingles in one block of the signature loop: small enough that a block stays in cache.
_BLOCK = 1 << 18
# Buckets larger than this are linked as a chain, not all pairs (quadratic).
MAX_BUCKET_PAIRS = 64


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def exact_duplicate_groups(texts: Sequence[str]) -> list[list[int]]:
    """Indices of identical texts, grouped; only groups of two or more, each sorted."""
    by_hash: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        by_hash.setdefault(text_hash(text), []).append(i)
    return [group for group in by_hash.values() if len(group) > 1]


def shingles(text: str, shingle: int = 5) -> set[str]:
    """Character shingles of the normalised text; a shorter text is one shingle; empty → none."""
    norm = normalise(text)
    if not norm:
        return set()
    if len(norm) <= shingle:
        return {norm}
    return {norm[i : i + shingle] for i in range(len(norm) - shingle + 1)}


def jaccard(a: str, b: str, shingle: int = 5) -> float:
    sa, sb = shingles(a, shingle), shingles(b, shingle)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _S33)
    h = h * _MIX1
    h = h ^ (h >> _S33)
    h = h * _MIX2
    return h ^ (h >> _S33)


def _window_hashes(codepoints: np.ndarray, starts: np.ndarray, shingle: int) -> np.ndarray:
    """32-bit hashes of the `shingle` code points that begin at each of `starts` (zero-padded)."""
    h = np.zeros(len(starts), dtype=np.uint64)
    for offset in range(shingle):
        h = h * _P + codepoints[starts + offset].astype(np.uint64)
    h = h * _P  # so the last character reaches the high half too
    # The high half of the polynomial; datasketch's affine32 scheme mixes it (MurmurHash3 fmix).
    return (h >> _S32).astype(np.uint32)


def shingle_hash32(shingle_text: str, shingle: int = 5) -> int:
    """The hash `near_duplicate_groups` gives one shingle, usable as a datasketch `hashfunc`."""
    cps = np.frombuffer(shingle_text.encode("utf-32-le"), dtype=np.uint32)
    padded = np.zeros(len(cps) + shingle, dtype=np.uint32)
    padded[: len(cps)] = cps
    with np.errstate(over="ignore"):
        return int(_window_hashes(padded, np.array([0]), shingle)[0])


def shingle_hashes(
    texts: Sequence[str], shingle: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All shingle hashes of all texts: (hashes uint32, first index per text, texts kept).

    Empty (or whitespace-only) texts have no shingles and are left out of `kept`.
    """
    norms = [normalise(t) for t in texts]
    kept = np.array([i for i, n in enumerate(norms) if n], dtype=np.int64)
    if len(kept) == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.int64), kept
    kept_norms = [norms[i] for i in kept]
    lengths = np.fromiter((len(n) for n in kept_norms), dtype=np.int64, count=len(kept_norms))
    joined = "".join(kept_norms)
    codepoints = np.zeros(len(joined) + shingle, dtype=np.uint32)
    codepoints[: len(joined)] = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    text_start = np.zeros(len(kept), dtype=np.int64)
    np.cumsum(lengths[:-1], out=text_start[1:])
    # A text of n >= shingle characters has n - shingle + 1 windows; a shorter one has one, whose
    # padding must be zeros, not the next text's characters.
    counts = np.maximum(lengths - shingle + 1, 1)
    first = np.zeros(len(kept), dtype=np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    window_start = np.repeat(text_start - first, counts) + np.arange(counts.sum(), dtype=np.int64)
    with np.errstate(over="ignore"):
        # A polynomial over contiguous slices of the whole array, in cache-sized chunks, then
        # one gather of the windows that lie inside a text.
        n = len(joined)
        at_position = np.empty(n, dtype=np.uint32)
        h = np.empty(_BLOCK, dtype=np.uint64)
        for lo in range(0, n, _BLOCK):
            hi = min(lo + _BLOCK, n)
            part = h[: hi - lo]
            part.fill(0)
            for offset in range(shingle):
                part *= _P
                part += codepoints[lo + offset : hi + offset]
            part *= _P
            part >>= _S32
            at_position[lo:hi] = part
        hashes = at_position[window_start]
        short = np.flatnonzero(lengths < shingle)
        for j in short:  # rare: texts shorter than one shingle
            n = int(lengths[j])
            padded = np.zeros(n + shingle, dtype=np.uint32)
            padded[:n] = codepoints[text_start[j] : text_start[j] + n]
            hashes[first[j]] = _window_hashes(padded, np.array([0]), shingle)[0]
    return hashes, first, kept


def minhash_signatures(
    hashes: np.ndarray, first: np.ndarray, num_perm: int = 128, seed: int = SEED
) -> np.ndarray:
    """MinHash signatures (len(first) × num_perm, uint32) of the texts whose shingles start at `first`."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    a = a.astype(np.uint32)
    b = b.astype(np.uint32)
    sigs = np.full((len(first), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(first) == 0:
        return sigs
    with np.errstate(over="ignore"):
        s1, m1, s2, m2, s3 = (
            np.uint32(16),
            np.uint32(0x85EBCA6B),
            np.uint32(13),
            np.uint32(0xC2B2AE35),
            np.uint32(16),
        )
        hv = hashes ^ (hashes >> s1)
        hv = hv * m1
        hv = hv ^ (hv >> s2)
        hv = hv * m2
        hv = hv ^ (hv >> s3)
        bounds = np.append(first, len(hv))
        # Blocks of whole texts, so each reduceat segment lies inside one block.
        block_ends = np.searchsorted(bounds, np.arange(_BLOCK, len(hv), _BLOCK), side="right") - 1
        cuts = np.unique(np.concatenate(([0], block_ends, [len(first)])))
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            start, stop = bounds[lo], bounds[hi]
            block = hv[start:stop]
            offsets = first[lo:hi] - start
            buf = np.empty_like(block)
            for j in range(num_perm):
                np.multiply(block, a[j], out=buf)
                buf += b[j]
                sigs[lo:hi, j] = np.minimum.reduceat(buf, offsets)
    return sigs


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.nodes: set[int] = set()

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, x: int, y: int) -> None:
        self.nodes.update((x, y))
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def groups(self, members: Iterable[int]) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for m in members:
            out.setdefault(self.find(m), []).append(m)
        return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: g[0])


def lsh_bands(threshold: float, num_perm: int) -> list[tuple[int, int]]:
    """The (start, end) signature ranges of the LSH bands datasketch picks for this threshold."""
    return list(_lsh_bands(threshold, num_perm))


@lru_cache(maxsize=32)
def _lsh_bands(threshold: float, num_perm: int) -> tuple[tuple[int, int], ...]:
    # datasketch integrates the false positive/negative curves (scipy) to pick the bands: ~0.1 s,
    # once per (threshold, num_perm), not once per batch.
    return tuple(MinHashLSH(threshold=threshold, num_perm=num_perm).hashranges)


def band_keys(sigs: np.ndarray, threshold: float, num_perm: int) -> np.ndarray:
    """One 64-bit key per LSH band per signature (len(sigs) × bands, uint64): two signatures
    share a bucket of a band when their keys for it are equal."""
    bands = lsh_bands(threshold, num_perm)
    n = len(sigs)
    keys = np.empty((n, len(bands)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b, (start, end) in enumerate(bands):
            band = sigs[:, start:end].astype(np.uint64)
            key = np.zeros(n, dtype=np.uint64)
            for col in range(band.shape[1]):
                key = key * _P + band[:, col] + np.uint64(1)
            keys[:, b] = _fmix64(key)
    return keys


def bucket_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of row indices (i < j) whose keys agree on at least one band (one column of `keys`)."""
    pairs: set[tuple[int, int]] = set()
    if len(keys) < 2:
        return pairs
    for b in range(keys.shape[1]):
        band_pairs(keys[:, b], pairs)
    return pairs


def band_pairs(key: np.ndarray, pairs: set[tuple[int, int]]) -> None:
    """Add to `pairs` the pairs of positions (i < j) of `key` (one band) with equal keys. The
    temporaries (the sort order, the sorted keys) are this band's only: ~13 bytes per row."""
    if len(key) < 2:
        return
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    del sorted_keys
    if not same.any():
        return
    # Runs of equal keys are buckets with two or more members.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], same.astype(np.int8), [0]))))
    del same
    for lo, hi in zip(edges[0::2], edges[1::2] + 1, strict=True):
        members = sorted(int(x) for x in order[lo:hi])
        if len(members) <= MAX_BUCKET_PAIRS:
            pairs.update(
                (members[x], members[y])
                for x in range(len(members))
                for y in range(x + 1, len(members))
            )
        else:  # a huge bucket: link neighbours instead of every pair
            pairs.update(zip(members[:-1], members[1:], strict=True))


def lsh_candidate_pairs(sigs: np.ndarray, threshold: float, num_perm: int) -> set[tuple[int, int]]:
    """Pairs of row indices (i < j) whose signatures agree on at least one whole LSH band.

    The bands are datasketch's `MinHashLSH` bands; the bucketing is vectorised with numpy
    because `MinHashLSH.insert` + `query` cost ~13 s for 100k signatures on our CI machine
    (the same pairs: a test compares both on a small input).
    """
    if len(sigs) < 2:
        return set()
    return bucket_pairs(band_keys(sigs, threshold, num_perm))


def lsh_candidate_pairs_datasketch(
    sigs: np.ndarray, threshold: float, num_perm: int
) -> set[tuple[int, int]]:
    """The same pairs through `datasketch.MinHashLSH` insert/query: the reference for tests."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    minhashes = [LeanMinHash(seed=SEED, hashvalues=row, scheme=SCHEME) for row in sigs]
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m, check_duplication=False)
    pairs: set[tuple[int, int]] = set()
    for i, m in enumerate(minhashes):
        pairs.update((i, j) for j in lsh.query(m) if j > i)
    return pairs


def near_duplicate_groups(
    texts: Sequence[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 5,
    apart: Sequence[int] | None = None,
) -> list[list[int]]:
    """Groups (sorted lists of indices, two or more each) of texts whose shingle sets have a
    Jaccard similarity of at least `threshold`, joined transitively. Empty texts are ignored.
    With `apart` (one key per text), two texts with the same key are never linked directly.
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    hashes, first, kept = shingle_hashes(texts, shingle)
    if len(kept) < 2:
        return []
    sigs = minhash_signatures(hashes, first, num_perm)
    # Candidates at a lower threshold, then the exact check: recall near the threshold without
    # giving up precision.
    candidates = lsh_candidate_pairs(sigs, max(0.3, threshold - 0.15), num_perm)
    cache: dict[int, set[str]] = {}

    def shingle_set(i: int) -> set[str]:
        if i not in cache:
            cache[i] = shingles(texts[i], shingle)
        return cache[i]

    uf = _UnionFind()
    for ri, rj in candidates:
        i, j = int(kept[ri]), int(kept[rj])
        if apart is not None and apart[i] == apart[j]:
            continue
        si, sj = shingle_set(i), shingle_set(j)
        union = len(si | sj)
        if union and len(si & sj) / union >= threshold:
            uf.union(i, j)
    return uf.groups(uf.nodes)
