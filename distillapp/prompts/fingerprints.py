"""Which text hashes an import has already written, in 8 bytes per prompt.

An import of millions of prompts drops exact duplicates before they reach the database, so it
must remember what it has written. A Python set of the hashes would cost ~70 bytes per prompt;
this keeps the first 64 bits of each 128-bit text hash in sorted numpy runs (merged like a binary
counter up to MAX_RUN, so a lookup touches few runs). Two different prompts share 64 bits with
probability ~n²/2⁶⁵ (3·10⁻⁸ for a million-prompt file): the later one would be dropped as a
duplicate, never stored twice.
"""

from __future__ import annotations

import numpy as np

# Runs stop merging at this size, so a merge never needs more than a few MiB of scratch memory;
# a lookup then also scans one run per MAX_RUN prompts (cheap next to parsing them).
MAX_RUN = 1 << 17


class SeenHashes:
    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, unique, sizes non-increasing

    def first_seen(self, hashes: list[str]) -> np.ndarray:
        """For each hash (32 hex digits), whether it is new: neither seen before nor earlier in
        `hashes`. The new ones are remembered."""
        if not hashes:
            return np.zeros(0, dtype=bool)
        # Each hash is 16 bytes; its first 8 (native order, only ever compared) are the fingerprint.
        prints = np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint64)[::2]
        unique, first = np.unique(prints, return_index=True)
        fresh = np.ones(len(unique), dtype=bool)
        for run in self._runs:
            at = np.searchsorted(run, unique)
            np.minimum(at, len(run) - 1, out=at)
            fresh &= run[at] != unique
        keep = np.zeros(len(prints), dtype=bool)
        keep[first[fresh]] = True
        self._push(unique[fresh])
        return keep

    def remember(self, hex_text: bytes | bytearray) -> None:
        """Remember hashes given as text: 32 hex digits each, with any dashes (UUID form) and
        whitespace between them, as PostgreSQL's COPY writes a uuid column."""
        packed = bytes.fromhex(bytes(hex_text).replace(b"-", b"").decode("ascii"))
        prints = np.frombuffer(packed, dtype=np.uint64)[::2]
        # Stored hashes are unique, so a batch need not be checked against the earlier ones.
        self._push(np.unique(prints))

    def _push(self, run: np.ndarray) -> None:
        if not len(run):
            return
        runs = self._runs
        runs.append(run)
        while len(runs) > 1 and len(runs[-1]) >= len(runs[-2]) and len(runs[-2]) < MAX_RUN:
            newer, older = runs.pop(), runs.pop()
            runs.append(np.sort(np.concatenate([older, newer])))
