"""A scratch SQLite database file for state that grows with the data and must not stay in memory
(the duplicate search's per-completion state, the ids a filter run comes back to).

Plain stdlib `sqlite3`, no Django: the file is private to one process, so it gets no journal, no
fsync, an exclusive lock and a small page cache (what it holds beyond that stays in the OS's file
cache, not in the process). `close` deletes the file; a process killed before that leaves it for
the next run to remove (`distillapp.filters.services.scratch`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

# Page cache of the scratch database, KiB: bounded whatever its size.
CACHE_KIB = 4096


class ScratchDB:
    def __init__(self, path: Path, *, cache_kib: int = CACHE_KIB) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in (
            "journal_mode = OFF",
            "synchronous = OFF",
            "locking_mode = EXCLUSIVE",
            "temp_store = FILE",
            f"cache_size = -{int(cache_kib)}",
        ):
            self.conn.execute(f"PRAGMA {pragma}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def size(self) -> int:
        """Bytes of the file now."""
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        """Close and delete the file; safe to call twice."""
        self.conn.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ScratchDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class IdSpool:
    """Ids appended in increasing order and read back in order, a chunk at a time: a list of
    any length that costs no memory."""

    def __init__(self, db: ScratchDB, name: str) -> None:
        if not name.isidentifier():
            raise ValueError(f"not a table name: {name!r}")
        self.db, self.table = db, name
        self.count = 0
        db.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)")

    def extend(self, ids: Iterable[int]) -> None:
        rows = [(int(i),) for i in ids]
        self.db.executemany(f"INSERT INTO {self.table} (id) VALUES (?)", rows)
        self.count += len(rows)

    def chunks(self, size: int) -> Iterator[list[int]]:
        """The ids in increasing order, `size` at a time (keyset pagination)."""
        last = -(2**63)
        while True:
            ids = [
                row[0]
                for row in self.db.execute(
                    f"SELECT id FROM {self.table} WHERE id > ? ORDER BY id LIMIT ?", (last, size)
                )
            ]
            if not ids:
                return
            yield ids
            last = ids[-1]

    def __len__(self) -> int:
        return self.count
