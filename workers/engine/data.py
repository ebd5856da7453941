"""Reading and validating training JSONL, before any model is loaded.

One example per line::

    {"messages": [{"role": "user", "content": "..."}], "completion": "...",
     # logit distillation only, either inline ...
     "token_ids": [..], "topk_ids": [[..], ..], "topk_logprobs": [[..], ..],
     # ... or a reference into a shard of workers.engine.topk_format records
     "topk_ref": {"path": "shard.bin", "offset": 0, "length": 123}}

Every problem found is reported with its line number (up to MAX_ERRORS), so a user fixes a file
in one go rather than one failed run at a time. Needs only numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.engine import topk_format

MAX_ERRORS = 20
MAX_K = 20
METHODS = ("sft", "kd")


class DataValidationError(ValueError):
    """The data file has problems; ``errors`` lists (line number, message), line 1 first."""

    def __init__(self, path: str, errors: list[tuple[int, str]]) -> None:
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  line {n}: {msg}" for n, msg in errors)
        more = f" (stopped at the first {MAX_ERRORS})" if len(errors) >= MAX_ERRORS else ""
        super().__init__(f"{path}: {len(errors)} problem(s){more}:\n{lines}")


@dataclass
class Record:
    line: int
    messages: list[dict[str, str]]
    completion: str | None
    # KD only: the teacher's generated ids and per-token top-k, [T] and [T, K].
    token_ids: np.ndarray | None = None
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_messages(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "'messages' must be a non-empty list of {role, content} objects"
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            return f"messages[{i}] must be an object"
        if not isinstance(msg.get("role"), str) or not msg["role"]:
            return f"messages[{i}].role must be a non-empty string"
        if not isinstance(msg.get("content"), str):
            return f"messages[{i}].content must be a string"
    return None


def _inline_topk(obj: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    ids, alt, lps = obj.get("token_ids"), obj.get("topk_ids"), obj.get("topk_logprobs")
    if not isinstance(ids, list) or not ids:
        return "'token_ids' must be a non-empty list of integers"
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
        return "'token_ids' must hold non-negative integers (the teacher's token ids)"
    if not isinstance(alt, list) or not isinstance(lps, list):
        return "'topk_ids' and 'topk_logprobs' must be lists with one row per generated token"
    if len(alt) != len(ids) or len(lps) != len(ids):
        return (
            f"'topk_ids' has {len(alt)} rows and 'topk_logprobs' {len(lps)}, "
            f"but there are {len(ids)} token_ids; one row per generated token is needed"
        )
    k = max((len(r) for r in alt if isinstance(r, list)), default=0)
    if k == 0 or k > MAX_K:
        return f"each top-k row needs 1 to {MAX_K} entries, got {k}"
    alt_arr = np.zeros((len(ids), k), dtype=np.int64)
    lp_arr = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for t, (row_ids, row_lps) in enumerate(zip(alt, lps, strict=True)):
        if not isinstance(row_ids, list) or not isinstance(row_lps, list) or not row_ids:
            return f"top-k row {t} must be two non-empty lists"
        if len(row_ids) != len(row_lps):
            return f"top-k row {t}: {len(row_ids)} ids but {len(row_lps)} log-probs"
        for j, (tid, lp) in enumerate(zip(row_ids, row_lps, strict=True)):
            if isinstance(tid, str):
                return (
                    f"top-k row {t} holds token strings, not ids: the teacher exposed no token ids, "
                    "so logit distillation is impossible; use method 'sft'"
                )
            if not isinstance(tid, int) or isinstance(tid, bool) or tid < 0:
                return f"top-k row {t}[{j}]: id must be a non-negative integer"
            if lp is None:
                continue  # padding
            if not isinstance(lp, int | float) or math.isnan(lp) or lp > 1e-3:
                return f"top-k row {t}[{j}]: log-prob must be a number <= 0, got {lp!r}"
            alt_arr[t, j] = tid
            lp_arr[t, j] = lp
    return np.asarray(ids, dtype=np.int64), alt_arr, lp_arr


def _ref_topk(ref: Any, base_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    if not isinstance(ref, dict):
        return "'topk_ref' must be an object {path, offset, length}"
    path, offset, length = ref.get("path"), ref.get("offset"), ref.get("length")
    if not isinstance(path, str) or not isinstance(offset, int) or not isinstance(length, int):
        return "'topk_ref' needs path (string), offset and length (integers)"
    full = path if os.path.isabs(path) else os.path.join(base_dir, path)
    if not os.path.isfile(full):
        return f"top-k shard not found: {full}"
    try:
        rec = topk_format.read_from_shard(full, offset, length)
    except (topk_format.TopkFormatError, OSError, ValueError) as exc:
        return f"cannot read top-k record at {path}@{offset}: {exc}"
    if rec.strings is not None:
        return (
            "the top-k record stores token strings: the teacher exposed no token ids, so logit "
            "distillation is impossible; use method 'sft'"
        )
    if rec.num_tokens == 0 or rec.k == 0:
        return "the top-k record is empty"
    if rec.k > MAX_K:
        return f"top-k record has K={rec.k}, at most {MAX_K} is supported"
    return rec.token_ids, rec.topk_ids, rec.topk_logprobs.astype(np.float32)


def _parse_line(obj: Any, line: int, method: str, base_dir: str) -> Record | str:
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    problem = _check_messages(obj.get("messages"))
    if problem:
        return problem
    completion = obj.get("completion")
    if completion is not None and not isinstance(completion, str):
        return "'completion' must be a string"
    record = Record(line=line, messages=obj["messages"], completion=completion)
    if method == "sft":
        if not completion:
            return "'completion' must be a non-empty string for sft"
        return record
    if "topk_ref" in obj:
        got = _ref_topk(obj["topk_ref"], base_dir)
    elif "topk_ids" in obj or "token_ids" in obj:
        got = _inline_topk(obj)
    else:
        return (
            "kd needs the teacher's 'token_ids' with 'topk_ids'/'topk_logprobs', or a 'topk_ref'; "
            "without them use method 'sft'"
        )
    if isinstance(got, str):
        return got
    record.token_ids, record.topk_ids, record.topk_logprobs = got
    if not np.isfinite(record.topk_logprobs).any(axis=1).all():
        return "every generated token needs at least one top-k entry with a finite log-prob"
    return record


def load_records(path: str, method: str) -> list[Record]:
    """Parse and validate the whole file; raise DataValidationError listing what is wrong."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not os.path.isfile(path):
        raise DataValidationError(path, [(0, "file not found")])
    base_dir = os.path.dirname(os.path.abspath(path))
    records: list[Record] = []
    errors: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append((n, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            else:
                got = _parse_line(obj, n, method, base_dir)
                if isinstance(got, str):
                    errors.append((n, got))
                else:
                    records.append(got)
            if len(errors) >= MAX_ERRORS:
                break
    if not errors and not records:
        errors.append((0, "the file holds no examples"))
    if errors:
        raise DataValidationError(path, errors)
    return records


def load_prompts(path: str) -> list[list[dict[str, str]]]:
    """A prompts file for generation: only ``messages`` is needed per line."""
    prompts: list[list[dict[str, str]]] = []
    errors: list[tuple[int, str]] = []
    with open(path, encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                errors.append((n, f"not valid JSON: {exc.msg}"))
                continue
            problem = _check_messages(obj.get("messages") if isinstance(obj, dict) else None)
            if problem:
                errors.append((n, problem))
            else:
                prompts.append(obj["messages"])
            if len(errors) >= MAX_ERRORS:
                break
    if errors:
        raise DataValidationError(path, errors)
    return prompts
