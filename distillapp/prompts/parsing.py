"""Streaming readers for prompt files (JSONL, CSV, Parquet) and the per-row rules.

Readers never hold the whole file: JSONL and CSV are read line by line from a binary file object,
Parquet in record batches. Each valid record becomes a `Row` tuple; problems are collected (with the
line or row number) in an `ErrorLog`, which stops the reading after `MAX_ERRORS`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import unicodedata
from collections.abc import Iterable, Iterator
from typing import IO, Any, NamedTuple

import orjson

from distillapp.prompts.heldout import is_heldout

MAX_ERRORS = 20
MAX_PROMPT_CHARS = 200_000  # keeps every prompt well inside PostgreSQL's tsvector limit
MAX_ID_CHARS = 255
ROLES = frozenset({"system", "user", "assistant"})
SPLITS = frozenset({"train", "heldout"})
BOM = b"\xef\xbb\xbf"
FORMATS = ("jsonl", "csv", "parquet")
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

MAX_LINE_BYTES = 16 * 1024 * 1024  # a longer line is refused rather than read into memory
# Metadata is free-form JSON stored per prompt: bounded so one row cannot nest past what the
# database and JSON libraries handle (PostgreSQL refuses jsonb deeper than ~1,000 levels) or
# carry thousands of keys (a 10,000-column CSV).
MAX_METADATA_DEPTH = 32  # levels of objects/arrays, the metadata object itself being level 1
MAX_METADATA_KEYS = 256  # keys of the metadata object and every object nested in it
MAX_METADATA_BYTES = 64 * 1024  # of the metadata serialised as JSON

csv.field_size_limit(MAX_LINE_BYTES)


class FileProblem(Exception):
    """A problem with the file as a whole (format, columns); carries the HTTP status to answer."""

    def __init__(self, status: int, detail: str, line: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.line = line


class RowProblem(Exception):
    pass


class Row(NamedTuple):
    position: int
    external_id: str
    # None when the prompt is one user message (its content is `text`), as Prompt stores it.
    messages: list[dict[str, str]] | None
    text: str
    reference: str | None
    metadata: dict[str, Any]
    split: str
    text_hash: str


class ErrorLog:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, line: int | None, message: str) -> None:
        if len(self.items) >= MAX_ERRORS:
            return
        self.items.append({"line": line, "message": message})

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS

    def __bool__(self) -> bool:
        return bool(self.items)


def normalise(text: str) -> str:
    """The text two prompts are compared by: NFKC, whitespace collapsed, stripped."""
    if text.isascii():  # already NFKC (isascii is O(1) on str)
        # ASCII whose only whitespace is single spaces needs at most its ends trimmed (strip
        # returns the same string when there is nothing to trim). One-character `in` tests are
        # memchr scans: together a fifth of the cost of isprintable() on a typical prompt.
        if (
            "  " not in text
            and "\n" not in text
            and "\t" not in text
            and "\r" not in text
            and "\x0b" not in text
            and "\x0c" not in text
            and "\x1c" not in text
            and "\x1d" not in text
            and "\x1e" not in text
            and "\x1f" not in text
        ):
            return text.strip(" ")
    else:
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def canonical_text(messages: list[dict[str, str]]) -> str:
    """A single user message is its text; a chat is its messages with their roles."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return normalise(messages[0]["content"])
    return "\n".join(f"{m['role']}: {normalise(m['content'])}" for m in messages)


def text_hash(canonical: str) -> str:
    """32 hex digits (a UUID's 128 bits) of the SHA-256 of the normalised text."""
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def detect_format(name: str, head: bytes) -> str:
    """The format from the content's magic bytes and the file name's extension."""
    lower = name.lower()
    ext = "." + lower.rsplit(".", 1)[-1] if "." in lower else ""
    by_ext = EXTENSIONS.get(ext)
    if head[:4] == b"PAR1":
        return "parquet"
    if by_ext == "parquet":
        raise FileProblem(415, "The file is named .parquet but is not a Parquet file.")
    if by_ext:
        return by_ext
    start = head[len(BOM) :] if head.startswith(BOM) else head
    if start.lstrip()[:1] == b"{":
        return "jsonl"
    raise FileProblem(
        415,
        f"Unsupported file type {ext or '(no extension)'}: upload JSON Lines (.jsonl), CSV (.csv) or Parquet (.parquet).",
    )


def _too_long(value: str) -> bool:
    return len(value) > MAX_PROMPT_CHARS


def _clean_messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowProblem('"messages" must be a non-empty list of {"role", "content"} objects')
    out = []
    has_text = False
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise RowProblem(f"messages[{i}] must be an object with role and content")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RowProblem(
                f"messages[{i}].role must be one of system, user, assistant (got {str(role)[:40]!r})"
            )
        if not isinstance(content, str):
            raise RowProblem(f"messages[{i}].content must be a string")
        if "\x00" in content:
            raise RowProblem(f"messages[{i}].content contains a NUL character")
        if _too_long(content):
            raise RowProblem(f"messages[{i}].content is longer than {MAX_PROMPT_CHARS} characters")
        has_text = has_text or bool(content.strip())
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise RowProblem('"messages" needs at least one user message')
    if not has_text:
        raise RowProblem("prompt is empty (every message is blank)")
    return out


def check_metadata(metadata: dict[str, Any]) -> None:
    """Raise RowProblem if the metadata is too deep, has too many keys or is too large.

    Iterative, so a row nested 1,000 levels deep is refused rather than crashing the reader.
    """
    keys = 0
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise RowProblem(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        if type(value) is dict:
            keys += len(value)
            if keys > MAX_METADATA_KEYS:
                raise RowProblem(f"metadata has more than {MAX_METADATA_KEYS} keys")
            children: Iterable[Any] = value.values()
        else:
            children = value
        stack.extend((child, depth + 1) for child in children if type(child) in (dict, list))
    try:
        size = len(orjson.dumps(metadata))
    except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits: the slow encoder
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise RowProblem(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB as JSON")


def build_row(
    position: int,
    prompt: Any,
    messages: Any,
    reference: Any,
    external_id: Any,
    split: Any,
    metadata: dict[str, Any],
    *,
    mask: int,
    threshold: int,
) -> Row:
    """Validate one record; raises RowProblem with a message for the user.

    `mask` is seed_mask(seed), computed once per file. This runs once per row of
    million-row files, so the common case (a plain string prompt) takes the shortest path.
    """
    msgs: list[dict[str, str]] | None = None
    if messages is not None:
        if prompt is not None:
            raise RowProblem('give either "prompt" or "messages", not both')
        msgs = _clean_messages(messages)
        if len(msgs) == 1 and msgs[0]["role"] == "user":
            prompt = msgs[0]["content"]
            msgs = None
        else:
            text = "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)
            canonical = canonical_text(msgs)
    if msgs is None:
        if type(prompt) is not str:
            if prompt is None:
                raise RowProblem('missing prompt: give "prompt" (text) or "messages" (chat)')
            raise RowProblem("prompt must be a string")
        if "\x00" in prompt:
            raise RowProblem("prompt contains a NUL character")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RowProblem(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
        text = prompt
        canonical = normalise(prompt)
    if not canonical:
        raise RowProblem("prompt is empty")
    if reference is not None:
        if type(reference) is not str:
            raise RowProblem("reference must be a string")
        if "\x00" in reference:
            raise RowProblem("reference contains a NUL character")
        reference = reference or None
    if external_id is None:
        external_id = ""
    elif isinstance(external_id, bool) or not isinstance(external_id, str | int):
        raise RowProblem("id must be a string or an integer")
    else:
        external_id = str(external_id)
        if len(external_id) > MAX_ID_CHARS or "\x00" in external_id:
            raise RowProblem(f"id must be at most {MAX_ID_CHARS} characters without NUL")
    hash_hex = text_hash(canonical)
    if split is None or split == "":
        split = "heldout" if is_heldout(mask, hash_hex, threshold) else "train"
    elif not isinstance(split, str) or split.strip().lower() not in SPLITS:
        raise RowProblem(f'split must be "train" or "heldout" (got {str(split)[:40]!r})')
    else:
        split = split.strip().lower()
    if metadata:
        check_metadata(metadata)
    return Row(position, external_id, msgs, text, reference, metadata, split, hash_hex)


# --- readers ---------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _DECODER.decode
_fast_loads = orjson.loads


def _utf8_problem(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8"


def _has_bad_text(obj: Any) -> bool:
    """Lone surrogates or NUL escapes that PostgreSQL cannot store (rare; checked only when hinted)."""
    try:
        dumped = json.dumps(obj, ensure_ascii=False)
        dumped.encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return True
    return "\\u0000" in dumped


def _lines(fh: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines; None for a line over MAX_LINE_BYTES (its rest is skipped, never held)."""
    readline = fh.readline
    while True:
        raw = readline(MAX_LINE_BYTES)
        if not raw:
            return
        if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:
                rest = readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            yield None
            continue
        yield raw


LINE_TOO_LONG = f"line longer than {MAX_LINE_BYTES // 2**20} MiB"


READ_BLOCK = 1024 * 1024


def _jsonl_lines(fh: IO[bytes]) -> Iterator[bytes | None]:
    """The file's lines without their newline, split a block at a time (JSON Lines cannot hold a
    raw newline inside a value); None for a line that outgrows MAX_LINE_BYTES across blocks, whose
    rest is skipped, never held. (A longer line that ends within a block is the caller's to refuse.)"""
    read = fh.read
    tail = b""
    skipping = False
    while block := read(READ_BLOCK):
        if skipping:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            block = block[cut + 1 :]
            skipping = False
            yield None
        elif tail:
            block = tail + block
        lines = block.split(b"\n")
        tail = lines.pop()
        yield from lines
        if len(tail) > MAX_LINE_BYTES:
            tail, skipping = b"", True
    if skipping:
        yield None
    elif tail:
        yield tail


def read_jsonl(fh: IO[bytes], errors: ErrorLog, *, mask: int, threshold: int) -> Iterator[Row]:
    position = 0
    line_no = 0
    loads = _fast_loads
    limit = MAX_LINE_BYTES
    for raw in _jsonl_lines(fh):
        line_no += 1
        if raw is None or len(raw) > limit:
            errors.add(line_no, LINE_TOO_LONG)
            if errors.full:
                return
            continue
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[3:]
        try:
            obj = loads(raw)  # orjson: validates UTF-8 and refuses NaN/Infinity itself
        except orjson.JSONDecodeError:
            if not raw or raw.isspace():
                continue  # blank lines are allowed (checked here, off the common path)
            # The slow path only for lines orjson refuses: the standard library's messages, and
            # what it accepts beyond orjson (integers over 64 bits, lone surrogates checked below).
            try:
                obj = _decode(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                errors.add(line_no, _utf8_problem(exc))
                if errors.full:
                    return
                continue
            except (ValueError, RecursionError) as exc:
                errors.add(line_no, f"invalid JSON: {exc}")
                if errors.full:
                    return
                continue
        if type(obj) is not dict:
            errors.add(
                line_no,
                f'expected a JSON object like {{"prompt": "..."}}, got {type(obj).__name__}',
            )
            if errors.full:
                return
            continue
        if (
            b"\\" in raw  # one-byte scan first: most lines have no escape at all
            and b"\\u" in raw
            and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)
            and _has_bad_text(obj)
        ):
            errors.add(line_no, "contains a NUL character or an unpaired surrogate escape")
            if errors.full:
                return
            continue
        position += 1
        pop = obj.pop
        try:
            row = build_row(
                position,
                pop("prompt", None),
                pop("messages", None),
                pop("reference", None),
                pop("id", None),
                pop("split", None),
                obj,
                mask=mask,
                threshold=threshold,
            )
        except RowProblem as exc:
            errors.add(line_no, str(exc))
            if errors.full:
                return
            continue
        if not errors:
            yield row


def _decoded_lines(fh: IO[bytes], state: dict[str, int]) -> Iterator[str]:
    for raw in _lines(fh):
        state["line"] += 1
        if raw is None:
            raise FileProblem(400, f"Line {state['line']}: {LINE_TOO_LONG}.", line=state["line"])
        if state["line"] == 1 and raw.startswith(BOM):
            raw = raw[3:]
        yield raw.decode("utf-8")


def read_csv(fh: IO[bytes], errors: ErrorLog, *, mask: int, threshold: int) -> Iterator[Row]:
    state = {"line": 0}
    reader = csv.reader(_decoded_lines(fh, state), strict=True)
    try:
        header = next(reader, None)
    except UnicodeDecodeError as exc:
        raise FileProblem(
            400, f"Line {state['line']}: {_utf8_problem(exc)}", line=state["line"]
        ) from exc
    except csv.Error as exc:
        raise FileProblem(
            400, f"Line {state['line']}: unreadable CSV header ({exc}).", line=state["line"]
        ) from exc
    if not header:
        raise FileProblem(400, "The file is empty.")
    header = [h.strip() for h in header]
    if "prompt" not in header:
        raise FileProblem(422, 'The CSV header has no "prompt" column.', line=1)
    if len(set(header)) != len(header):
        raise FileProblem(422, "The CSV header repeats a column name.", line=1)
    metadata_columns = len(set(header) - {"prompt", "reference", "id", "split"})
    if metadata_columns > MAX_METADATA_KEYS:
        raise FileProblem(
            422,
            f"The CSV header has {metadata_columns:,} metadata columns; "
            f"at most {MAX_METADATA_KEYS} are allowed.",
            line=1,
        )
    width = len(header)
    position = 0
    while True:
        start = state["line"] + 1
        try:
            values = next(reader, None)
        except UnicodeDecodeError as exc:
            errors.add(state["line"], _utf8_problem(exc))
            return
        except csv.Error as exc:
            errors.add(start, f"unreadable CSV row: {exc}")
            return
        if values is None:
            return
        if not values:
            continue
        if len(values) != width:
            errors.add(start, f"expected {width} fields as in the header, got {len(values)}")
            if errors.full:
                return
            continue
        record = dict(zip(header, values, strict=True))
        position += 1
        try:
            row = build_row(
                position,
                record.pop("prompt"),
                None,
                record.pop("reference", None),
                record.pop("id", None),
                record.pop("split", None),
                record,
                mask=mask,
                threshold=threshold,
            )
        except RowProblem as exc:
            errors.add(start, str(exc))
            if errors.full:
                return
            continue
        if "\x00" in "".join(record.values()):
            errors.add(start, "a metadata column contains a NUL character")
            continue
        if not errors:
            yield row


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def read_parquet(fh: IO[bytes], errors: ErrorLog, *, mask: int, threshold: int) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(fh)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise FileProblem(415, f"Not a readable Parquet file ({exc}).") from exc
    names = parquet.schema_arrow.names
    if "prompt" not in names and "messages" not in names:
        raise FileProblem(422, 'The Parquet file has no "prompt" column.')
    row_no = 0
    batches: Iterable[Any] = parquet.iter_batches(batch_size=2048)
    try:
        for batch in batches:
            for record in batch.to_pylist():
                row_no += 1
                try:
                    metadata = {
                        k: v
                        for k, v in record.items()
                        if k not in {"prompt", "messages", "reference", "id", "split"}
                    }
                    metadata = _json_safe(metadata)
                    if _has_bad_text(metadata):
                        raise RowProblem("a metadata column contains a NUL character")
                    row = build_row(
                        row_no,
                        record.get("prompt"),
                        record.get("messages"),
                        record.get("reference"),
                        record.get("id"),
                        record.get("split"),
                        metadata,
                        mask=mask,
                        threshold=threshold,
                    )
                except RowProblem as exc:
                    errors.add(row_no, str(exc))
                    if errors.full:
                        return
                    continue
                if not errors:
                    yield row
    except (pa.ArrowException, OSError, ValueError) as exc:
        errors.add(row_no + 1, f"unreadable Parquet data ({exc})")


READERS = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}
