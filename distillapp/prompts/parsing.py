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
    messages: list[dict[str, str]]
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
        # Printable ASCII has no whitespace but " ": most prompts need no collapsing at all.
        if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
            return text
    else:
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def canonical_text(messages: list[dict[str, str]]) -> str:
    """A single user message is its text; a chat is its messages with their roles."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return normalise(messages[0]["content"])
    return "\n".join(f"{m['role']}: {normalise(m['content'])}" for m in messages)


def text_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def heldout_threshold(fraction: float) -> int:
    return int(fraction * 2**64)


def is_heldout(seed: int, hash_hex: str, threshold: int) -> bool:
    """Decided by (seed, text) only, so the split does not depend on row order."""
    digest = hashlib.blake2b(f"{seed}:{hash_hex}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < threshold


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


def build_row(
    position: int,
    prompt: Any,
    messages: Any,
    reference: Any,
    external_id: Any,
    split: Any,
    metadata: dict[str, Any],
    *,
    seed: int,
    threshold: int,
) -> Row:
    """Validate one record; raises RowProblem with a message for the user."""
    if messages is not None:
        if prompt is not None:
            raise RowProblem('give either "prompt" or "messages", not both')
        msgs = _clean_messages(messages)
        if len(msgs) == 1 and msgs[0]["role"] == "user":
            text = msgs[0]["content"]
        else:
            text = "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)
        canonical = canonical_text(msgs)
    else:
        if prompt is None:
            raise RowProblem('missing prompt: give "prompt" (text) or "messages" (chat)')
        if not isinstance(prompt, str):
            raise RowProblem("prompt must be a string")
        if not prompt or prompt.isspace():
            raise RowProblem("prompt is empty")
        if "\x00" in prompt:
            raise RowProblem("prompt contains a NUL character")
        if _too_long(prompt):
            raise RowProblem(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
        msgs = [{"role": "user", "content": prompt}]
        text = prompt
        canonical = normalise(prompt)
    if not canonical:
        raise RowProblem("prompt is empty")
    if reference is not None:
        if not isinstance(reference, str):
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
        split = "heldout" if is_heldout(seed, hash_hex, threshold) else "train"
    elif not isinstance(split, str) or split.strip().lower() not in SPLITS:
        raise RowProblem(f'split must be "train" or "heldout" (got {str(split)[:40]!r})')
    else:
        split = split.strip().lower()
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


def read_jsonl(fh: IO[bytes], errors: ErrorLog, *, seed: int, threshold: int) -> Iterator[Row]:
    position = 0
    line_no = 0
    for raw in _lines(fh):
        line_no += 1
        if raw is None:
            errors.add(line_no, LINE_TOO_LONG)
            if errors.full:
                return
            continue
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[3:]
        if not raw or raw.isspace():
            continue
        try:
            obj = _fast_loads(raw)  # orjson: validates UTF-8 and refuses NaN/Infinity itself
        except orjson.JSONDecodeError:
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
        if not isinstance(obj, dict):
            errors.add(
                line_no,
                f'expected a JSON object like {{"prompt": "..."}}, got {type(obj).__name__}',
            )
            if errors.full:
                return
            continue
        if (
            b"\\u" in raw
            and (b"\\u0000" in raw or b"\\ud" in raw or b"\\uD" in raw)
            and _has_bad_text(obj)
        ):
            errors.add(line_no, "contains a NUL character or an unpaired surrogate escape")
            if errors.full:
                return
            continue
        position += 1
        try:
            row = build_row(
                position,
                obj.pop("prompt", None),
                obj.pop("messages", None),
                obj.pop("reference", None),
                obj.pop("id", None),
                obj.pop("split", None),
                obj,
                seed=seed,
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


def read_csv(fh: IO[bytes], errors: ErrorLog, *, seed: int, threshold: int) -> Iterator[Row]:
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
                seed=seed,
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


def read_parquet(fh: IO[bytes], errors: ErrorLog, *, seed: int, threshold: int) -> Iterator[Row]:
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
                        seed=seed,
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
