"""The prompt-set import: stream a file into prompts, all or nothing, deduplicated per project."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from django.conf import settings
from django.db import connection, transaction

from distillapp.core.iterables import chunked
from distillapp.projects.models import Project
from distillapp.prompts.fingerprints import SeenHashes
from distillapp.prompts.heldout import heldout_threshold, seed_mask
from distillapp.prompts.models import Prompt, PromptSet, Split
from distillapp.prompts.parsing import (
    MAX_ERRORS,
    READERS,
    ErrorLog,
    FileProblem,
    Row,
    detect_format,
)
from distillapp.prompts.services.search import search_index_start

MAX_SEED = 2**63 - 1
ORM_BATCH = 500
HASH_READ_CHUNK = 20_000  # existing text hashes read per query on SQLite


class PromptImportError(Exception):
    """Why an import was refused. Nothing is stored when this is raised.

    status: 400 content errors (invalid JSON/UTF-8/CSV, missing or empty prompt, bad `messages`,
    empty file), 413 file over PROMPT_UPLOAD_MAX_BYTES, 415 unknown or mismatched format,
    422 schema or parameter problems (missing `prompt` column, held-out fraction outside 0..1, bad seed
    or name). errors: up to 20 `{"line": int | None, "message": str}`.
    """

    def __init__(
        self, status: int, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors if errors is not None else [{"line": None, "message": detail}]


@dataclass(frozen=True)
class ImportResult:
    prompt_set: PromptSet
    imported: int
    duplicates_dropped: int
    heldout: int


@dataclass
class _Counts:
    rows: int = 0
    imported: int = 0
    heldout: int = 0


def clean_fraction(value: Any) -> float:
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise PromptImportError(
            422, "The held-out fraction must be a number between 0 and 1."
        ) from None
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise PromptImportError(
            422, "The held-out fraction must be between 0 and 1 (e.g. 0.1 for 10 %)."
        )
    return fraction


def clean_seed(value: Any) -> int:
    if value is None or value == "":
        return secrets.randbelow(2**31)
    try:
        seed = int(value)
    except (TypeError, ValueError):
        raise PromptImportError(422, "The seed must be a whole number.") from None
    if not 0 <= seed <= MAX_SEED:
        raise PromptImportError(422, f"The seed must be between 0 and {MAX_SEED}.")
    return seed


@contextlib.contextmanager
def _opened(file: Any) -> Iterator[tuple[IO[bytes], str, int]]:
    """(binary file object, name, size) for a path, an UploadedFile or any file object with a name."""
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        with path.open("rb") as fh:
            yield fh, path.name, path.stat().st_size
        return
    name = os.path.basename(str(getattr(file, "name", "") or ""))
    fh = getattr(file, "file", file)  # Django's File wraps the real file object
    size = getattr(file, "size", None)
    if size is None:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
    fh.seek(0)
    yield fh, name, int(size)


def _sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        digest.update(chunk)
    fh.seek(0)
    return digest.hexdigest()


class _HashingReader:
    """A binary file's read/readline that feed SHA-256 with what they return."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._digest.update(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self._fh.readline(size)
        self._digest.update(data)
        return data

    def hexdigest(self) -> str:
        """The whole file's digest (reads what the parser left unread, e.g. after errors)."""
        while self.read(1024 * 1024):
            pass
        return self._digest.hexdigest()


def _clean_name(name: str | None, source_name: str) -> str:
    cleaned = (
        (name or "").strip()
        or (source_name.rsplit(".", 1)[0] if source_name else "")
        or "Prompt set"
    )
    if len(cleaned) > 200:
        raise PromptImportError(422, "Keep the name under 200 characters.")
    return cleaned


def prompt_set_import(
    *,
    project: Project,
    file: Any,
    name: str,
    heldout_fraction: float = 0.1,
    seed: int | None = None,
    created_by: Any = None,
    use_copy: bool | None = None,
) -> ImportResult:
    """Import a JSONL/CSV/Parquet file as a new prompt set of `project`, all or nothing.

    Rows are streamed and validated as they are written (COPY on PostgreSQL, batched bulk_create
    elsewhere) inside one transaction that is rolled back if any row is bad, so memory stays flat
    whatever the file size. Exact duplicates (normalised text, within the file or already in the
    project) are dropped and counted; imports into one project take turns for this. Each new
    prompt is held out when a hash of (seed, text) falls under `heldout_fraction`, unless its
    `split` field says otherwise.

    Not idempotent: importing the same file again makes a new set whose prompts were all dropped
    as duplicates (imported 0). Raises PromptImportError (see its docstring for the status codes). `use_copy` forces a write path
    (benchmarks); by default COPY is used on PostgreSQL.
    """
    fraction = clean_fraction(heldout_fraction)
    seed_value = clean_seed(seed)
    limit = settings.PROMPT_UPLOAD_MAX_BYTES
    with _opened(file) as (fh, source_name, size):
        if size > limit:
            raise PromptImportError(
                413,
                f"The file is {size:,} bytes; the limit is {limit:,} bytes (DISTILLERY_UPLOAD_MAX_BYTES).",
            )
        if size == 0:
            raise PromptImportError(400, "The file is empty.")
        set_name = _clean_name(name, source_name)
        try:
            fmt = detect_format(source_name, fh.read(64))
        except FileProblem as exc:
            raise PromptImportError(exc.status, exc.detail) from None
        fh.seek(0)
        # Parquet is read by seeking around the file, so it is hashed first; the line formats are
        # hashed as they are read (one pass over the file instead of two).
        reader: Any = _HashingReader(fh) if fmt != "parquet" else fh
        sha = _sha256(fh) if fmt == "parquet" else ""
        errors = ErrorLog()
        rows = READERS[fmt](
            reader, errors, mask=seed_mask(seed_value), threshold=heldout_threshold(fraction)
        )
        if use_copy is None:
            use_copy = connection.vendor == "postgresql"
        try:
            with transaction.atomic():
                prompt_set = PromptSet.objects.create(
                    project=project,
                    name=set_name,
                    source_name=source_name[:255],
                    source_format=fmt,
                    sha256=sha,
                    size_bytes=size,
                    heldout_fraction=fraction,
                    seed=seed_value,
                    created_by=created_by if getattr(created_by, "pk", None) else None,
                )
                writer = _write_copy if use_copy else _write_orm
                # The writer holds the only reference to the hashes (8 bytes a prompt), so they
                # are freed before the commit and the task it enqueues.
                counts = writer(prompt_set, rows, errors, _claim_project(project.pk))
                if errors:
                    raise _rollback(errors)
                if counts.rows == 0:
                    raise PromptImportError(400, "The file has no prompts.")
                if isinstance(reader, _HashingReader):
                    prompt_set.sha256 = reader.hexdigest()
                prompt_set.total_count = counts.imported
                prompt_set.heldout_count = counts.heldout
                prompt_set.train_count = counts.imported - counts.heldout
                prompt_set.duplicates_dropped = counts.rows - counts.imported
                # PostgreSQL search vectors are filled after the commit, off the import's path;
                # elsewhere search is by substring and needs no index.
                deferred = connection.vendor == "postgresql"
                prompt_set.search_indexed = not deferred
                prompt_set.search_indexed_count = 0 if deferred else counts.imported
                prompt_set.save(
                    update_fields=[
                        "sha256",
                        "total_count",
                        "heldout_count",
                        "train_count",
                        "duplicates_dropped",
                        "search_indexed",
                        "search_indexed_count",
                    ]
                )
                if deferred:
                    search_index_start(prompt_set=prompt_set)
        except FileProblem as exc:
            errors_out = [{"line": exc.line, "message": exc.detail}]
            raise PromptImportError(exc.status, exc.detail, errors_out) from None
    return ImportResult(
        prompt_set=prompt_set,
        imported=counts.imported,
        duplicates_dropped=prompt_set.duplicates_dropped,
        heldout=counts.heldout,
    )


def _rollback(errors: ErrorLog) -> PromptImportError:
    count = len(errors.items)
    more = (
        f" (reading stopped at the first {MAX_ERRORS}; there may be more)"
        if count >= MAX_ERRORS
        else ""
    )
    first = errors.items[0]
    where = f"line {first['line']}: " if first["line"] else ""
    detail = f"Nothing was imported: {count} problem{'s' if count != 1 else ''} found{more}. First: {where}{first['message']}"
    return PromptImportError(400, detail, list(errors.items))


_COPY_COLUMNS = (
    "project_id, prompt_set_id, position, external_id, messages, text, reference, metadata,"
    " split, text_hash"
)
COPY_CHUNK_ROWS = 2_000  # rows deduplicated and formatted per write to the COPY stream
IMPORT_LOCK_CLASS = 0x5052  # pg_advisory_xact_lock(class, project): one import per project at once
_BS, _BS2, _NULL = "\\", "\\\\", "\\N"


def _copy_escape(value: str) -> str:
    """A value for COPY's text format (backslash, newline, carriage return and tab escaped)."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if "\r" in value:
        value = value.replace("\r", "\\r")
    if "\t" in value:
        value = value.replace("\t", "\\t")
    return value


def _copy_lines(prefix: str, rows: Iterable[Row]) -> bytes:
    """Rows in COPY's text format (columns as _COPY_COLUMNS; `prefix` holds the two ids).

    Pre-formatted lines are cheaper than psycopg's write_row per row. JSON encoders escape control
    characters, so only their backslashes need COPY escaping. A prompt that is one user message
    stores no `messages` (see Prompt.chat).
    """
    dumps = _json_text
    esc = _copy_escape
    lines: list[str] = []
    append = lines.append
    for row in rows:
        msgs = row.messages
        reference = row.reference
        metadata = row.metadata
        append(
            f"{prefix}{row.position}\t{esc(row.external_id)}"
            f"\t{_NULL if msgs is None else dumps(msgs).replace(_BS, _BS2)}\t{esc(row.text)}"
            f"\t{_NULL if reference is None else esc(reference)}"
            f"\t{dumps(metadata).replace(_BS, _BS2) if metadata else '{}'}"
            f"\t{row.split}\t{row.text_hash}\n"
        )
    return "".join(lines).encode()


_STDLIB_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json_text(value: Any) -> str:
    """Compact JSON text: orjson, or the standard library for what orjson refuses (integers over
    64 bits, which the tolerant JSONL path accepts)."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _STDLIB_DUMPS(value)


def _claim_project(project_id: int) -> SeenHashes:
    """Take the project's import lock and return the text hashes its prompts already have.

    The import is the only writer of prompts, so with the lock held until the commit nothing can
    add a prompt the returned hashes miss: dropping what they contain keeps the project free of
    exact duplicates (Prompt has no unique index for this; see its docstring). SQLite needs no
    lock: its transactions (BEGIN IMMEDIATE) already take turns.
    """
    seen = SeenHashes()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [IMPORT_LOCK_CLASS, project_id % 2**31]
            )
            _remember_hashes_copy(cursor, seen, project_id)
        return seen
    hashes = (
        Prompt.objects.filter(prompt_set__project_id=project_id)
        .values_list("text_hash", flat=True)
        .iterator(chunk_size=HASH_READ_CHUNK)
    )
    for chunk in chunked(hashes, HASH_READ_CHUNK):
        seen.remember("".join(value.hex for value in chunk).encode())
    return seen


def _remember_hashes_copy(cursor: Any, seen: SeenHashes, project_id: int) -> None:
    """Stream the project's text hashes into `seen` with COPY (8 bytes kept per prompt). They are
    found through the project's sets, which the keyset index (prompt_set, id) serves: nothing
    indexes prompts_prompt.project_id."""
    pending = bytearray()
    with cursor.copy(
        "COPY (SELECT p.text_hash FROM prompts_prompt p"
        " JOIN prompts_promptset s ON s.id = p.prompt_set_id WHERE s.project_id = %s) TO STDOUT",
        [project_id],
    ) as copy:
        for data in copy:
            pending += data
            if len(pending) >= 1 << 20:
                cut = pending.rindex(b"\n") + 1
                seen.remember(pending[:cut])
                del pending[:cut]
    if pending:
        seen.remember(pending)


def _fresh_rows(chunk: list[Row], seen: SeenHashes, counts: _Counts) -> list[Row]:
    """The chunk's rows whose text the project does not have yet (first occurrence wins);
    counts them."""
    new_rows = list(itertools.compress(chunk, seen.first_seen([row.text_hash for row in chunk])))
    counts.imported += len(new_rows)
    counts.heldout += [row.split for row in new_rows].count(Split.HELDOUT)
    return new_rows


def _write_copy(
    prompt_set: PromptSet, rows: Iterable[Row], errors: ErrorLog, seen: SeenHashes
) -> _Counts:
    """COPY the new prompts straight into their table, dropping duplicates on the way.

    The COPY streams: PostgreSQL (its own process, the other core) stores a chunk while Python
    parses the next. Duplicates never reach the stream: `seen` holds the project's hashes
    (_claim_project) and remembers each row written. Full-text vectors are filled after the commit
    by prompt_set_index_search.
    """
    counts = _Counts()
    prefix = f"{prompt_set.project_id}\t{prompt_set.pk}\t"
    with connection.cursor() as cursor:
        # All or nothing and can be redone: the commit need not wait for the WAL flush.
        cursor.execute("SET LOCAL synchronous_commit = off")
        # A larger GIN pending list batches the metadata index work of a big insert.
        cursor.execute("SET LOCAL gin_pending_list_limit = '64MB'")
        with cursor.copy(f"COPY prompts_prompt ({_COPY_COLUMNS}) FROM STDIN") as copy:
            for chunk in chunked(rows, COPY_CHUNK_ROWS):
                counts.rows += len(chunk)
                if errors:
                    continue  # keep reading: the reader collects up to MAX_ERRORS problems
                new_rows = _fresh_rows(chunk, seen, counts)
                if new_rows:
                    copy.write(_copy_lines(prefix, new_rows))
            if errors:
                # Raising inside the block ends the COPY as failed instead of storing it.
                raise _rollback(errors)
    return counts


def _write_orm(
    prompt_set: PromptSet, rows: Iterable[Row], errors: ErrorLog, seen: SeenHashes
) -> _Counts:
    """bulk_create in batches (SQLite, and the benchmark's baseline), duplicates dropped as by
    _write_copy."""
    counts = _Counts()
    for chunk in chunked(rows, ORM_BATCH):
        counts.rows += len(chunk)
        if errors:
            continue
        Prompt.objects.bulk_create(
            [
                Prompt(
                    project_id=prompt_set.project_id,
                    prompt_set_id=prompt_set.pk,
                    position=r.position,
                    external_id=r.external_id,
                    messages=r.messages,
                    text=r.text,
                    reference=r.reference,
                    metadata=r.metadata,
                    split=r.split,
                    text_hash=r.text_hash,
                )
                for r in _fresh_rows(chunk, seen, counts)
            ],
            batch_size=ORM_BATCH,
        )
    return counts
