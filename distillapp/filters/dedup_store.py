"""Exact and near duplicates over any number of texts added in batches, with the per-text state in
a scratch SQLite database (`distillapp.filters.scratch`) instead of memory. No Django.

What `add` writes, per text (empty ones are left out: they duplicate nothing):
- `item`: its insertion number `seq` (the row id), id, group key (the prompt), rank class and
  in-scope bit;
- `hash_log`: the first 8 bytes of its SHA-256 (exact duplicates);
- `band_log`: one key per LSH band (near duplicates): the band's number in the high half, the low
  32 bits of its MinHash band key in the low half.

The two logs are written a batch at a time as blobs, split into partitions by key range, so
`resolve` can load one partition at a time and find equal keys with a numpy sort. The number of
partitions follows the expected number of entries (`capacity`), so a partition holds about
`PART_ENTRIES` of them however many texts there are: memory is one partition's, not all texts'.

`resolve` then finds, in this order (the same results as grouping everything in memory):
1. exact groups: equal hashes; the text with the lowest (rank, id) is the group's first, the
   others its exact duplicates (`exdup`);
2. candidate pairs among the rest (one representative per exact group): texts whose keys agree
   on one band, all pairs of a bucket, or neighbours in `seq` order for a bucket larger than
   `dedup.MAX_BUCKET_PAIRS`; without `within_group` only pairs of different groups (`pair`);
3. each candidate checked by exact Jaccard on texts fetched again by id (`fetch_texts`), a few
   hundred at a time; the pairs at or above the threshold are joined by a union-find (`uf`);
4. in each connected component the lowest (rank, id) is kept; the others (of another group than
   the kept one, unless `within_group`) are its near duplicates, with their Jaccard to it (`near`);
5. `dup`: one row per duplicate, by id: EXACT or NEAR, the first identical text, the kept text
   (for an exact copy of a near duplicate, the kept text of that one's component), the
   similarity, in-scope bit and rank, read back per batch with `lookup`.

Everything after step 1 grows with the number of duplicates, not of texts, and lives in the file
too, read and written a chunk at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from distillapp.filters import dedup
from distillapp.filters.scratch import ScratchDB

EXACT = 1
NEAR = 2
# Rank classes for picking the kept one of a group: the lowest (class, id) is kept.
RANK_KEPT = 0  # outside this run, already kept (passed, restored, awaiting the judge)
RANK_CLEAN = 1  # failed no other filter, or outside this run and not checked yet
RANK_OTHER = 2  # failed another filter, or outside this run and filtered out
# Texts fetched at once to check candidate pairs: their shingle sets (~25 kB for 300
# characters) are the largest transient memory of the check, bounded by this.
_VERIFY_TEXTS = 500
# Log entries per partition: a partition is loaded and sorted at once, ~40 bytes per entry.
PART_ENTRIES = 1 << 17
# Rows per query when reading or writing by a list of keys (well under SQLite's 32,766
# variables, and under the 999 of old builds).
_CHUNK = 900
_LOW32 = np.uint64(0xFFFFFFFF)


class Found(NamedTuple):
    kind: int  # EXACT or NEAR
    first: int  # the first identical text (exact) or the kept text (near)
    keeper: int  # the text kept for the group
    similarity: float  # Jaccard similarity to the kept text; 1.0 for exact


def text_hash64(text: str) -> int:
    """The first 8 bytes of the text's SHA-256, as a signed 64-bit integer (SQLite's): at a
    million texts a false match has a chance of about 3e-8, so exact duplicates keep 8 bytes per
    text instead of the text."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little", signed=True)


class _KeyLog:
    """(key, seq) entries appended a batch at a time, stored by key range in `parts` partitions;
    `runs` yields, one partition at a time, the entries whose key occurs more than once."""

    def __init__(self, db: ScratchDB, table: str, parts: int) -> None:
        self.db, self.table, self.parts = db, table, max(1, parts)
        db.execute(f"CREATE TABLE {table} (part INTEGER NOT NULL, keys BLOB, seqs BLOB)")
        db.execute(f"CREATE INDEX {table}_part ON {table} (part)")

    def append(self, keys: np.ndarray, seqs: np.ndarray) -> None:
        """`keys` uint64, whose low 32 bits are uniform (they pick the partition); `seqs` int."""
        if len(keys) == 0:
            return
        part = ((keys & _LOW32) * np.uint64(self.parts)) >> np.uint64(32)
        order = np.argsort(part, kind="stable")  # stable: seqs stay in order within a part
        part, keys, seqs = part[order], keys[order], seqs[order].astype(np.uint32)
        cuts = np.flatnonzero(part[1:] != part[:-1]) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(part)]))
        self.db.executemany(
            f"INSERT INTO {self.table} (part, keys, seqs) VALUES (?, ?, ?)",
            [
                (int(part[lo]), keys[lo:hi].tobytes(), seqs[lo:hi].tobytes())
                for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)
            ],
        )

    def runs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per partition: (keys, seqs) of the entries whose key occurs at least twice, sorted by
        key, then by seq (the order they were appended in)."""
        for p in range(self.parts):
            blobs = self.db.execute(
                f"SELECT keys, seqs FROM {self.table} WHERE part = ? ORDER BY rowid", (p,)
            ).fetchall()
            if not blobs:
                continue
            keys = np.concatenate([np.frombuffer(k, dtype=np.uint64) for k, _ in blobs])
            seqs = np.concatenate([np.frombuffer(s, dtype=np.uint32) for _, s in blobs])
            del blobs
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            same = keys[1:] == keys[:-1]
            if not same.any():
                continue
            dup = np.zeros(len(keys), dtype=np.bool_)
            dup[1:] |= same
            dup[:-1] |= same
            yield keys[dup], seqs[order[dup]].astype(np.int64)


def _runs_of(keys: np.ndarray) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of equal values of sorted `keys`."""
    if len(keys) == 0:
        return
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    ends = np.concatenate((cuts, [len(keys)])).tolist()
    yield from zip(starts, ends, strict=True)


def _select_in(db: ScratchDB, sql: str, values: Sequence[int]) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql`, whose `IN ({marks})` gets `values` (any number of them) `_CHUNK` at a
    time. Every chunk is padded to `_CHUNK` with NULLs, which match nothing, so the statement's
    text is always the same: SQLite keeps a prepared statement per distinct text, and lists of
    every length would fill that cache with large programs."""
    statement = sql.format(marks=", ".join("?" * _CHUNK))
    for start in range(0, len(values), _CHUNK):
        chunk: list[int | None] = list(values[start : start + _CHUNK])
        chunk += [None] * (_CHUNK - len(chunk))
        yield from db.execute(statement, chunk)


class DedupStore:
    """See the module's docstring. Without `within_group`, two texts of the same group (a
    prompt's samples) are never linked as near duplicates; exact copies always are."""

    def __init__(
        self,
        db: ScratchDB,
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
        self.db = db
        self.exact, self.near = exact, near
        self.threshold, self.within_group = threshold, within_group
        self.num_perm, self.shingle = num_perm, shingle
        # Candidates at a lower threshold, then the exact check: recall near the threshold
        # without giving up precision.
        self.lsh_threshold = max(0.3, threshold - 0.15)
        self.n_bands = len(dedup.lsh_bands(self.lsh_threshold, num_perm)) if near else 0
        self.n = 0
        self.resolved = False
        self._tick: Callable[[], object] = lambda: None
        capacity = max(capacity, 1)
        db.execute(
            "CREATE TABLE item (seq INTEGER PRIMARY KEY, id INTEGER NOT NULL,"
            " grp INTEGER, rank INTEGER NOT NULL, scope INTEGER NOT NULL)"
        )
        self.hashes = _KeyLog(db, "hash_log", -(-capacity // PART_ENTRIES)) if exact else None
        self.bands = (
            _KeyLog(db, "band_log", -(-capacity * self.n_bands // PART_ENTRIES)) if near else None
        )
        db.execute("CREATE TABLE exdup (seq INTEGER PRIMARY KEY, first INTEGER NOT NULL)")
        db.execute("CREATE TABLE pair (a INTEGER, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID")
        db.execute("CREATE TABLE uf (node INTEGER PRIMARY KEY, up INTEGER NOT NULL)")
        db.execute("CREATE TABLE near (seq INTEGER PRIMARY KEY, keeper INTEGER NOT NULL, sim REAL)")
        db.execute(
            "CREATE TABLE dup (id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, first INTEGER"
            " NOT NULL, keeper INTEGER NOT NULL, sim REAL NOT NULL, scope INTEGER NOT NULL,"
            " rank INTEGER NOT NULL)"
        )

    # ---- adding -------------------------------------------------------------------------------

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
        if self.resolved:
            raise RuntimeError("the store is resolved; nothing can be added")
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if not keep:
            return
        lo = self.n
        seqs = np.arange(lo, lo + len(keep), dtype=np.int64)
        kept_texts = [texts[i] for i in keep]
        db = self.db
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO item (seq, id, grp, rank, scope) VALUES (?, ?, ?, ?, ?)",
            [(lo + k, ids[i], groups[i], ranks[i], int(in_scope)) for k, i in enumerate(keep)],
        )
        if self.hashes is not None:
            hashes = np.array([text_hash64(t) for t in kept_texts], dtype=np.int64)
            self.hashes.append(hashes.view(np.uint64), seqs)
        if self.bands is not None:
            shingled, first, kept = dedup.shingle_hashes(kept_texts, self.shingle)
            sigs = dedup.minhash_signatures(shingled, first, self.num_perm)
            # A non-empty text always has a shingle, so every text of the batch has a signature.
            assert len(kept) == len(kept_texts)
            # The low 32 bits of each 64-bit band key (a few more chance candidates, all removed
            # by the exact check), the band's number above them.
            keys = dedup.band_keys(sigs, self.lsh_threshold, self.num_perm) & _LOW32
            keys |= np.arange(self.n_bands, dtype=np.uint64) << np.uint64(32)
            self.bands.append(keys.ravel(), np.repeat(seqs, self.n_bands))
        db.execute("COMMIT")
        self.n = lo + len(keep)

    # ---- resolving ----------------------------------------------------------------------------

    def resolve(
        self,
        fetch_texts: Callable[[Sequence[int]], dict[int, str]],
        *,
        on_progress: Callable[[], object] | None = None,
    ) -> int:
        """Find the duplicates among everything added; returns how many there are.
        `on_progress` is called between partitions and pages (a heartbeat)."""
        if self.resolved:
            raise RuntimeError("the store is already resolved")
        self.resolved = True
        self._tick = on_progress or (lambda: None)
        db = self.db
        db.execute("BEGIN")
        if self.hashes is not None and self.n > 1:
            self._exact()
        if self.bands is not None and self.n > 1:
            self._candidates()
            self._components(fetch_texts)
            self._near_keepers()
            self._similarities(fetch_texts)
        db.execute(
            "INSERT INTO dup (id, kind, first, keeper, sim, scope, rank)"
            f" SELECT i.id, {EXACT}, f.id, coalesce(k.id, f.id), 1.0, i.scope, i.rank"
            " FROM exdup e JOIN item i ON i.seq = e.seq JOIN item f ON f.seq = e.first"
            " LEFT JOIN near n ON n.seq = e.first LEFT JOIN item k ON k.seq = n.keeper"
        )
        db.execute(
            "INSERT INTO dup (id, kind, first, keeper, sim, scope, rank)"
            f" SELECT i.id, {NEAR}, k.id, k.id, n.sim, i.scope, i.rank"
            " FROM near n JOIN item i ON i.seq = n.seq JOIN item k ON k.seq = n.keeper"
        )
        db.execute("COMMIT")
        count: int = db.execute("SELECT count(*) FROM dup").fetchone()[0]
        return count

    def _items(self, seqs: Sequence[int], columns: str) -> dict[int, tuple[int, ...]]:
        """`columns` of the items with these seqs, by seq."""
        sql = f"SELECT seq, {columns} FROM item WHERE seq IN ({{marks}})"
        return {seq: tuple(rest) for seq, *rest in _select_in(self.db, sql, seqs)}

    def _exact(self) -> None:
        """Each group of equal hashes: the lowest (rank, id) is first, the others copies of it."""
        assert self.hashes is not None
        for keys, seqs in self.hashes.runs():
            order = self._items(seqs.tolist(), "rank, id")
            rows: list[tuple[int, int]] = []
            for lo, hi in _runs_of(keys):
                members = seqs[lo:hi].tolist()
                first = min(members, key=lambda s: order[s])
                rows.extend((s, first) for s in members if s != first)
            self.db.executemany("INSERT INTO exdup (seq, first) VALUES (?, ?)", rows)
            self._tick()

    def _copies(self, seqs: Sequence[int]) -> set[int]:
        """Which of these seqs are exact copies (not their group's representative)."""
        return {
            row[0]
            for row in _select_in(self.db, "SELECT seq FROM exdup WHERE seq IN ({marks})", seqs)
        }

    def _candidates(self) -> None:
        """Pairs (a < b, by seq) of representatives that share a bucket of some band."""
        assert self.bands is not None
        for keys, seqs in self.bands.runs():
            copies = self._copies(np.unique(seqs).tolist())
            if copies:
                keep = ~np.isin(seqs, np.fromiter(copies, dtype=np.int64, count=len(copies)))
                keys, seqs = keys[keep], seqs[keep]
            pairs: list[tuple[int, int]] = []
            for lo, hi in _runs_of(keys):
                if hi - lo < 2:
                    continue
                members = seqs[lo:hi].tolist()  # in seq order
                if len(members) <= dedup.MAX_BUCKET_PAIRS:
                    pairs.extend(
                        (members[x], members[y])
                        for x in range(len(members))
                        for y in range(x + 1, len(members))
                    )
                else:  # a huge bucket: link neighbours instead of every pair
                    pairs.extend(zip(members[:-1], members[1:], strict=True))
            self.db.executemany("INSERT OR IGNORE INTO pair (a, b) VALUES (?, ?)", pairs)
            self._tick()

    def _candidate_pairs(self) -> Iterator[tuple[int, int, int, int]]:
        """(a, b, id of a, id of b) of the candidate pairs, in (a, b) order, a page at a time;
        without `within_group`, only pairs of different groups."""
        last = (-1, -1)
        while True:
            page = self.db.execute(
                "SELECT p.a, p.b, ia.id, ib.id FROM pair p"
                " JOIN item ia ON ia.seq = p.a JOIN item ib ON ib.seq = p.b"
                " WHERE (p.a, p.b) > (?, ?) AND (? OR ia.grp IS NOT ib.grp)"
                " ORDER BY p.a, p.b LIMIT ?",
                (*last, int(self.within_group), _CHUNK),
            ).fetchall()
            if not page:
                return
            yield from page
            last = (page[-1][0], page[-1][1])
            self._tick()

    def _jaccard(
        self,
        pairs: Iterable[tuple[int, int, int, int]],
        fetch_texts: Callable[[Sequence[int]], dict[int, str]],
    ) -> Iterator[tuple[int, int, float]]:
        """(a, b, exact Jaccard similarity) of each pair (a, b, id of a, id of b), fetching
        texts `_VERIFY_TEXTS` at a time."""
        chunk: list[tuple[int, int, int, int]] = []
        need: set[int] = set()

        def check() -> Iterator[tuple[int, int, float]]:
            texts = fetch_texts(sorted(need))
            sets = {k: dedup.shingles(t, self.shingle) for k, t in texts.items()}
            for a, b, ida, idb in chunk:
                sa, sb = sets.get(ida, set()), sets.get(idb, set())
                union = len(sa | sb)
                yield a, b, (len(sa & sb) / union if union else 0.0)

        for pair in pairs:
            chunk.append(pair)
            need.update(pair[2:])
            if len(need) >= _VERIFY_TEXTS:
                yield from check()
                chunk, need = [], set()
        if chunk:
            yield from check()

    def _find(self, node: int) -> int:
        db = self.db
        path = []
        while True:
            row = db.execute("SELECT up FROM uf WHERE node = ?", (node,)).fetchone()
            if row is None or row[0] == node:
                break
            path.append(node)
            node = row[0]
        if len(path) > 1:
            db.executemany("UPDATE uf SET up = ? WHERE node = ?", [(node, p) for p in path[:-1]])
        return node

    def _components(self, fetch_texts: Callable[[Sequence[int]], dict[int, str]]) -> None:
        """Join the candidate pairs at or above the threshold (union-find in the file)."""
        db = self.db
        for a, b, similarity in self._jaccard(self._candidate_pairs(), fetch_texts):
            if similarity < self.threshold:
                continue
            db.executemany("INSERT OR IGNORE INTO uf (node, up) VALUES (?, ?)", [(a, a), (b, b)])
            ra, rb = self._find(a), self._find(b)
            if ra != rb:
                db.execute("UPDATE uf SET up = ? WHERE node = ?", (min(ra, rb), max(ra, rb)))
        # Every node straight to its root, so a component is the nodes sharing `up`.
        last = -1
        while True:
            nodes = [
                row[0]
                for row in db.execute(
                    "SELECT node FROM uf WHERE node > ? ORDER BY node LIMIT ?", (last, _CHUNK)
                )
            ]
            if not nodes:
                break
            db.executemany(
                "UPDATE uf SET up = ? WHERE node = ?", [(self._find(n), n) for n in nodes]
            )
            last = nodes[-1]
        # Components in `up` order straight from an index: only one component at a time is
        # sorted (by rank, id), not all of them.
        db.execute("CREATE INDEX uf_up ON uf (up)")

    def _near_keepers(self) -> None:
        """In each component the lowest (rank, id) is kept; the others, across groups only unless
        `within_group` (the kept text's own samples stay: best-of-n picks later), are its near
        duplicates."""
        rows = self.db.execute(
            "SELECT u.up, u.node, i.grp FROM uf u JOIN item i ON i.seq = u.node"
            " ORDER BY u.up, i.rank, i.id"
        )
        root, keeper, keeper_group = None, -1, None
        flagged: list[tuple[int, int]] = []
        while page := rows.fetchmany(_CHUNK):
            for up, node, group in page:
                if up != root:
                    root, keeper, keeper_group = up, node, group
                elif self.within_group or group != keeper_group:
                    flagged.append((node, keeper))
            # Another table than the one being read: safe while `rows` is open.
            self.db.executemany("INSERT INTO near (seq, keeper) VALUES (?, ?)", flagged)
            flagged.clear()

    def _similarities(self, fetch_texts: Callable[[Sequence[int]], dict[int, str]]) -> None:
        """Each near duplicate's Jaccard similarity to its kept text (transitive members of a
        component may be below the threshold), as float32 like the in-memory index had it."""
        last = -1
        while True:
            page = self.db.execute(
                "SELECT n.seq, n.keeper, i.id, k.id FROM near n JOIN item i ON i.seq = n.seq"
                " JOIN item k ON k.seq = n.keeper WHERE n.seq > ? ORDER BY n.seq LIMIT ?",
                (last, _CHUNK),
            ).fetchall()
            if not page:
                return
            self.db.executemany(
                "UPDATE near SET sim = ? WHERE seq = ?",
                [(float(np.float32(sim)), a) for a, _b, sim in self._jaccard(page, fetch_texts)],
            )
            last = page[-1][0]
            self._tick()

    # ---- reading ------------------------------------------------------------------------------

    def lookup(self, ids: Sequence[int]) -> dict[int, Found]:
        """The duplicates among these ids (any number), by id."""
        sql = "SELECT id, kind, first, keeper, sim FROM dup WHERE id IN ({marks})"
        return {
            cid: Found(*found) for cid, *found in _select_in(self.db, sql, [int(i) for i in ids])
        }

    def duplicates(
        self, size: int, *, in_scope: bool | None = None, rank: int | None = None
    ) -> Iterator[list[tuple[int, Found]]]:
        """All duplicates in id order, `size` at a time; only those in (or out of) the scope
        and of one rank class when asked."""
        where = ["id > ?"]
        params: list[object] = []
        if in_scope is not None:
            where.append("scope = ?")
            params.append(int(in_scope))
        if rank is not None:
            where.append("rank = ?")
            params.append(rank)
        sql = (
            f"SELECT id, kind, first, keeper, sim FROM dup WHERE {' AND '.join(where)}"
            " ORDER BY id LIMIT ?"
        )
        last = -(2**63)
        while True:
            page = self.db.execute(sql, (last, *params, size)).fetchall()
            if not page:
                return
            yield [(cid, Found(*found)) for cid, *found in page]
            last = page[-1][0]
