"""The rows of a build straight from PostgreSQL, as column batches (`batches.RowBatch`).

One `COPY (SELECT …) TO STDOUT (FORMAT binary)` on a connection of its own streams the candidates
in build order (prompt id, completion id) while the build writes progress on its usual one. A
reader thread drains the stream into batches of raw rows, a batch ahead of the build (so
PostgreSQL sends while the build writes), and each batch is parsed into columns with numpy
(fixed-width fields first, then each text field's offset found from the previous one's length)
and Arrow string views over the received bytes: no Python object per row or field. The recipe's
rules (`selectors.dataset_rows`, the reference implementation, which every other database uses)
are then applied to whole columns; only what has no column form runs per row in Python
(reasoning rules, target dedupe, odd prompt messages).

PostgreSQL computes what it can per row: the target (edits win), its source, whether it is the
teacher's exact output, the top-k bytes only for those rows, and a prompt's messages (as jsonb
text) only on its first row, turned into the canonical JSON by one regular expression over the
batch.
"""

from __future__ import annotations

import contextlib
import json
import queue
import struct
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from django.db import DEFAULT_DB_ALIAS, connections

from distillapp.datasets.batches import RowBatch, dumps
from distillapp.datasets.recipe import (
    Recipe,
    dedupe_key,
    final_answer,
    strip_reasoning,
    validation_unit,
)
from distillapp.filters.models import CompletionVerdict
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, Split, chat_messages
from distillapp.review.models import BestPick, FinalDecision, ItemState, ReviewItem

SOURCES = ("review", "edited", "adjudicated", "bulk", "unreviewed")
# Fixed-width fields first (never null), then the variable ones; the order of the SELECT list.
FIXED = (
    ("completion_id", ">i8"),
    ("prompt_id", ">i8"),
    ("job_id", ">i8"),
    ("sample_index", ">i4"),
    ("prompt_set_id", ">i8"),
    ("source", ">i4"),
    ("exact", "|b1"),
    ("has_score", "|b1"),
    ("judge_score", ">f8"),
)
# Fields sent on a prompt's first row only.
PROMPT_FIELDS = frozenset({"messages", "prompt_text", "reference"})
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_SIGNATURE) + 8  # signature, flags, header extension length (0)
_TRAILER = b"\xff\xff"

# A prompt's messages as PostgreSQL prints jsonb (keys by length, ", " and ": "), when they are
# plain {role, content} strings; their canonical JSON swaps the keys and drops the spaces.
# Strings are printed escaped exactly as Python's json.dumps(ensure_ascii=False) escapes them.
_STR = r'"(?:[^"\\]|\\.)*"'
_ROLE = r'"(?:[^"\\]|\\.)+"'  # an empty role becomes "user": left to chat_messages
_OBJECT = r'\{"role": ' + _ROLE + r', "content": ' + _STR + r"\}"
_PLAIN_MESSAGES = r"^\[" + _OBJECT + r"(?:, " + _OBJECT + r")*\]$"
_OBJECT_PARTS = r'\{"role": (' + _ROLE + r'), "content": (' + _STR + r")\}(,?) ?"
_CANONICAL_OBJECT = r'{"content":\2,"role":\1}\3'


def usable() -> bool:
    """The stream needs PostgreSQL and committed data: its connection sees no open transaction
    of ours (tests inside one, and any caller in an atomic block, take `dataset_rows`)."""
    connection = connections[DEFAULT_DB_ALIAS]
    return connection.vendor == "postgresql" and not connection.in_atomic_block


def _variable_fields(recipe: Recipe) -> tuple[str, ...]:
    names: tuple[str, ...] = ("verdict_state", "target", "topk", "messages", "prompt_text")
    if recipe.reasoning == "match_reference":
        names += ("reference",)
    if recipe.reasoning == "strip":
        names += ("text",)
    return names


def copy_sql(
    *, project: Project, recipe: Recipe, topk_bytes: bool = True
) -> tuple[str, dict[str, Any]]:
    """The COPY statement: `candidates_queryset`'s rows (the same rules, written out so each
    column has a known binary form), ordered as the build writes them."""
    jobs = GenerationJob.objects.filter(project=project)
    if recipe.jobs:
        jobs = jobs.filter(pk__in=recipe.jobs)
    params: dict[str, Any] = {
        "jobs": list(jobs.values_list("pk", flat=True)),
        "ok": CompletionStatus.OK.value,
        "train": Split.TRAIN.value,
        "done": ItemState.DONE.value,
        "approve": FinalDecision.APPROVE.value,
    }
    approved = "(ri.state = %(done)s AND ri.decision = %(approve)s)"
    if recipe.include_unreviewed:
        params["passed"] = ["passed", "restored"]
        params["undecided"] = [ItemState.OPEN.value, ItemState.LEASED.value]
        chosen = (
            f"({approved} OR (v.state = ANY(%(passed)s) AND (ri.id IS NULL OR "
            "(ri.state = ANY(%(undecided)s) AND ri.reviews_count = 0))))"
        )
        review_join = "LEFT JOIN"
    else:
        chosen = approved
        review_join = "JOIN"
    where = [
        "c.job_id = ANY(%(jobs)s)",
        "c.status = %(ok)s",
        "p.split = %(train)s",
        chosen,
    ]
    if recipe.min_judge_score is not None:
        params["min_score"] = recipe.min_judge_score
        where.append("v.judge_score >= %(min_score)s")
    edited = "(ri.state = %(done)s AND ri.target_text IS NOT NULL)"
    exact = f"(NOT {edited} OR ri.target_text = c.text)"
    first = "(lag(c.prompt_id) OVER w IS DISTINCT FROM c.prompt_id)"
    # Without `topk_bytes` (the preview counts records, it never reads them) a one-byte stand-in
    # marks a non-empty record: octet_length reads the TOAST pointer, not the TOAST table.
    record = (
        "c.topk" if topk_bytes else "CASE WHEN octet_length(c.topk) > 0 THEN '\\x01'::bytea END"
    )
    # Reasoning stripped later may make an edited target the teacher's text: keep every record.
    topk = record if recipe.reasoning == "strip" else f"CASE WHEN {exact} THEN {record} END"
    columns = [
        "c.id::int8",
        "c.prompt_id::int8",
        "c.job_id::int8",
        "c.sample_index::int4",
        "p.prompt_set_id::int8",
        "(CASE WHEN ri.state IS DISTINCT FROM %(done)s THEN 4 WHEN ri.target_text IS NOT NULL "
        "THEN 1 WHEN ri.adjudicated_by_id IS NOT NULL THEN 2 WHEN ri.bulk_action_id IS NOT NULL "
        "THEN 3 ELSE 0 END)::int4",
        f"COALESCE({exact}, false)",
        "(v.judge_score IS NOT NULL)",
        "COALESCE(v.judge_score, 0)::float8",
        "v.state::text",
        f"CASE WHEN {edited} THEN ri.target_text ELSE c.text END",
        f"{topk}::bytea",
        f"CASE WHEN {first} THEN p.messages::text END",
        f"CASE WHEN {first} THEN p.text END",
    ]
    if recipe.reasoning == "match_reference":
        columns.append(f"CASE WHEN {first} THEN p.reference END")
    if recipe.reasoning == "strip":
        columns.append("c.text")
    tables = {
        "c": Completion._meta.db_table,
        "p": Prompt._meta.db_table,
        "ri": ReviewItem._meta.db_table,
        "v": CompletionVerdict._meta.db_table,
    }
    sql = (
        f"COPY (SELECT {', '.join(columns)} "
        f"FROM {tables['c']} c JOIN {tables['p']} p ON p.id = c.prompt_id "
        f"{review_join} {tables['ri']} ri ON ri.completion_id = c.id "
        f"LEFT JOIN {tables['v']} v ON v.completion_id = c.id "
        f"WHERE {' AND '.join(where)} "
        "WINDOW w AS (ORDER BY c.prompt_id, c.id) "
        "ORDER BY c.prompt_id, c.id) TO STDOUT (FORMAT binary)"
    )
    return sql, params


class _Stop(Exception):
    pass


# Where a binary COPY row keeps its prompt id: after the field count and the completion id.
_PROMPT_AT = 2 + (4 + 8) + 4
_PROMPT_ID = struct.Struct(">q")


class CopyReader:
    """Reads the COPY stream on a thread and connection of its own into batches of whole
    prompts, at least `batch_rows` rows each (the rows' bytes in one buffer, and their lengths),
    at most `ahead` batches ahead of the consumer. Then runs `after` there (the connection is
    idle while the consumer still writes); its result is the `after` future."""

    def __init__(
        self,
        sql: str,
        params: dict[str, Any],
        *,
        batch_rows: int,
        ahead: int = 1,
        after: Callable[[], Any] | None = None,
    ) -> None:
        self._sql, self._params, self._batch_rows = sql, params, batch_rows
        self._queue: queue.Queue[tuple[bytearray, array] | BaseException | None] = queue.Queue(
            ahead
        )
        self._stop = threading.Event()
        self._after_work = after
        self.after: Future[Any] = Future()
        self._thread = threading.Thread(target=self._run, name="dataset-copy", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[bytearray, array] | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stop

    def _run(self) -> None:
        connection = connections[DEFAULT_DB_ALIAS]  # this thread's own
        try:
            with connection.cursor() as cursor:
                # The plan is hash joins and a sort: compiling it costs more than it saves.
                cursor.execute("SET jit = off")
                with cursor.copy(self._sql, self._params) as copy:
                    self._read(copy.read)
            if self._after_work is not None and self.after.set_running_or_notify_cancel():
                try:
                    self.after.set_result(self._after_work())
                except BaseException as exc:  # raised where the result is wanted
                    self.after.set_exception(exc)
            self._put(None)
        except _Stop:
            pass
        except BaseException as exc:  # handed to the consumer, which raises it
            with contextlib.suppress(_Stop):
                self._put(exc)
        finally:
            connection.close()

    def _read(self, read: Any) -> None:
        size = self._batch_rows
        head = bytes(read())
        if head[: len(_SIGNATURE)] != _SIGNATURE:
            raise ValueError("not a binary COPY stream")
        data, lengths = bytearray(head[_HEADER:]), array("q")
        if data == _TRAILER:
            while read():
                pass
            return
        if data:
            lengths.append(len(data))
        last = -1  # the prompt of the batch's last row, once the batch is full
        while row := read():
            if len(row) == 2 and row == _TRAILER:
                while read():  # the end of the COPY: its result, which frees the connection
                    pass
                break
            if len(lengths) >= size:
                prompt = _PROMPT_ID.unpack_from(row, _PROMPT_AT)[0]
                if last < 0:
                    last = _PROMPT_ID.unpack_from(data, len(data) - lengths[-1] + _PROMPT_AT)[0]
                if prompt != last:  # whole prompts per batch: this row starts the next one
                    self._put((data, lengths))
                    data, lengths, last = bytearray(), array("q"), -1
            data += row
            lengths.append(len(row))
        if lengths:
            self._put((data, lengths))

    def __iter__(self) -> Iterator[tuple[bytearray, array]]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self.after.cancel()
        self._thread.join(timeout=30)


def _parse(data: bytearray, lengths: array, names: tuple[str, ...]) -> dict[str, Any]:
    """Binary COPY tuples → numpy arrays (fixed fields) and Arrow arrays (variable fields; the
    prompt's fields, `PROMPT_FIELDS`, one per prompt of the batch, in order)."""
    n = len(lengths)
    size = np.frombuffer(lengths, dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(size[:-1], out=starts[1:])
    end = len(data)
    data += bytes(16)  # padding: every 12-byte gather stays in bounds
    buf = pa.py_buffer(data)

    def gather(positions: np.ndarray, width: int) -> np.ndarray:
        # `width` bytes at each position, one copy per row (an unaligned view of every offset)
        view = np.ndarray(
            buffer=data, dtype=f"V{width}", shape=(len(data) - width + 1,), strides=(1,)
        )
        return view[positions]

    counts = gather(starts, 2).view(">i2")
    if np.any(counts != len(FIXED) + len(names)) or starts[-1] + size[-1] != end:
        raise ValueError("unexpected COPY row layout")
    width = 2 + sum(4 + np.dtype(t).itemsize for _, t in FIXED)
    prefix = gather(starts, width).view(np.uint8).reshape(n, width)
    out: dict[str, Any] = {}
    at = 2
    for name, dtype in FIXED:
        item = np.dtype(dtype).itemsize
        raw = np.ascontiguousarray(prefix[:, at + 4 : at + 4 + item]).view(dtype).ravel()
        out[name] = raw.astype(np.dtype(dtype).newbyteorder("="))
        at += 4 + item
    # A prompt's own fields come on its first row only: read them there, one per prompt.
    prompt_id = out["prompt_id"]
    heads = np.flatnonzero(np.concatenate([[True], prompt_id[1:] != prompt_id[:-1]]))
    position = starts + width
    for name in names:
        length = gather(position, 4).view(">i4").astype(np.int64)
        begin = position + 4
        if name in PROMPT_FIELDS:
            out[name] = _views(gather, buf, begin[heads], length[heads], binary=False)
        else:
            out[name] = _views(gather, buf, begin, length, binary=name == "topk")
        position = begin + np.maximum(length, 0)
    if np.any(position != starts + size):
        raise ValueError("COPY row length mismatch")
    return out


def _views(gather: Any, buf: pa.Buffer, begin: np.ndarray, length: np.ndarray, *, binary: bool):
    """An Arrow string (or binary) array of the byte ranges (begin, length; -1 = null) of `buf`,
    made as a view array (16 bytes per value, no copy) then compacted by Arrow."""
    n = len(begin)
    valid = length >= 0
    size = np.where(valid, length, 0).astype("<i4")
    views = np.zeros((n, 16), dtype=np.uint8)
    views[:, :4] = size.view(np.uint8).reshape(n, 4)
    head = gather(begin, 12).view(np.uint8).reshape(n, 12)
    inline = size <= 12
    views[inline, 4:] = head[inline] * (np.arange(12) < size[inline, None])
    long = ~inline
    views[long, 4:8] = head[long, :4]
    views[long, 12:] = begin[long].astype("<i4").view(np.uint8).reshape(-1, 4)
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    kind = pa.binary_view() if binary else pa.string_view()
    array = pa.Array.from_buffers(kind, n, [bitmap, pa.py_buffer(views), buf])
    return array.cast(pa.binary() if binary else pa.string())


def _messages_json(raw: pa.StringArray, text: pa.StringArray) -> pa.StringArray:
    """Canonical JSON of each prompt's chat messages (`dumps(chat_messages(...))`) from the
    jsonb text; messages of another shape go through `chat_messages` itself."""
    plain = pc.fill_null(pc.match_substring_regex(raw, _PLAIN_MESSAGES), False)
    canonical = pc.replace_substring_regex(raw, _OBJECT_PARTS, _CANONICAL_OBJECT)
    if pc.all(plain).as_py():
        return canonical
    odd = pc.invert(plain)
    fixed = []
    for value, fallback in zip(
        raw.filter(odd).to_pylist(), text.filter(odd).to_pylist(), strict=True
    ):
        try:
            parsed = json.loads(value) if value is not None else None
        except ValueError:
            parsed = None
        fixed.append(dumps(chat_messages(parsed, fallback or "")))
    return pc.replace_with_mask(canonical, odd, pa.array(fixed, type=pa.string()))


class Selection:
    """Applies a recipe to parsed candidate batches (whole prompts), as `dataset_rows` does."""

    def __init__(self, *, project: Project, recipe: Recipe, stats: Counter[str]) -> None:
        self.recipe = recipe
        self.stats = stats
        self.best = np.array(
            sorted(
                BestPick.objects.filter(project=project).values_list("completion_id", flat=True)
            ),
            dtype=np.int64,
        )
        self.seen: set[int] = set()  # dedupe "target": hashes of every earlier target

    def batch(self, col: dict[str, Any]) -> RowBatch | None:
        recipe, stats = self.recipe, self.stats
        prompt_id = col["prompt_id"]
        n = len(prompt_id)
        stats["candidates"] += n
        new_group = np.ones(n, dtype=bool)
        new_group[1:] = prompt_id[1:] != prompt_id[:-1]
        group = np.cumsum(new_group) - 1
        firsts = np.flatnonzero(new_group)
        target: pa.StringArray = col["target"]
        exact = col["exact"].copy()
        keep = np.ones(n, dtype=bool)

        if recipe.reasoning == "strip":
            think = np.flatnonzero(
                pc.match_substring(target, "<think>").to_numpy(zero_copy_only=False)
            )
            if len(think):
                stripped = [strip_reasoning(t) for t in target.take(think).to_pylist()]
                texts = col["text"].take(think).to_pylist()
                exact[think] = [s == t for s, t in zip(stripped, texts, strict=True)]
                mask = np.zeros(n, dtype=bool)
                mask[think] = True
                target = pc.replace_with_mask(target, mask, pa.array(stripped, type=pa.string()))
        elif recipe.reasoning == "match_reference":
            references = col["reference"].to_pylist()
            for i, value in enumerate(target.to_pylist()):
                reference = references[group[i]]
                if reference is None or not reference.strip():
                    stats["dropped_no_reference"] += 1
                    keep[i] = False
                elif final_answer(value) != " ".join(reference.split()).casefold():
                    stats["dropped_reasoning"] += 1
                    keep[i] = False

        # Empty targets: only one without a printable ASCII character can be (checked in Python).
        blank = keep & ~pc.match_substring_regex(target, "[!-~]").to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(blank).tolist():
            if not target[i].as_py().strip():
                stats["dropped_empty"] += 1
                keep[i] = False

        score = col["judge_score"]
        has_score = col["has_score"]
        cid = col["completion_id"]
        if recipe.per_prompt == "one":
            keep = self._one_per_prompt(keep, group, cid, col, score, has_score)

        if recipe.dedupe == "pair":
            keep = self._dedupe_pairs(keep, group, target)
        elif recipe.dedupe == "target":
            for i in np.flatnonzero(keep).tolist():
                key = dedupe_key("target", int(prompt_id[i]), target[i].as_py())
                if key in self.seen:
                    stats["dropped_duplicates"] += 1
                    keep[i] = False
                else:
                    self.seen.add(key)

        rows = np.flatnonzero(keep)
        if not len(rows):
            return None
        used = np.unique(group[rows])  # groups with rows, in order
        ordinal = np.searchsorted(used, group[rows])
        heads = firsts[used]
        prompt_ids = prompt_id[heads]
        if recipe.validation_fraction:
            validation = np.array(
                [
                    validation_unit(recipe.seed, p) < recipe.validation_fraction
                    for p in prompt_ids.tolist()
                ],
                dtype=bool,
            )
        else:
            validation = np.zeros(len(used), dtype=bool)
        take = pa.array(rows)
        exact_rows = exact[rows]
        # A row carries a record when its target is the teacher's own and the record is not
        # empty; a null index takes a null.
        filled = np.asarray(pc.binary_length(col["topk"]).fill_null(0), dtype=np.int64)[rows] > 0
        topk = col["topk"].take(pa.array(rows, mask=~(exact_rows & filled)))
        return RowBatch(
            prompt_ids=prompt_ids,
            prompt_set_ids=col["prompt_set_id"][heads],
            validation=validation,
            messages_json=_messages_json(
                col["messages"].take(pa.array(used)), col["prompt_text"].take(pa.array(used))
            ),
            prompt_index=ordinal,
            completion_id=cid[rows],
            job_id=col["job_id"][rows],
            sample_index=col["sample_index"][rows].astype(np.int32),
            target=target.take(take),
            source=pa.array(SOURCES).take(pa.array(col["source"][rows])),
            teacher_exact=exact_rows,
            judge_score=pa.array(score[rows], type=pa.float64(), mask=~has_score[rows]),
            verdict_state=col["verdict_state"].take(take),
            topk=topk,
        )

    def _one_per_prompt(
        self,
        keep: np.ndarray,
        group: np.ndarray,
        cid: np.ndarray,
        col: dict[str, Any],
        score: np.ndarray,
        has_score: np.ndarray,
    ) -> np.ndarray:
        """Per prompt the sample picked as best, else the highest judge score, then the lowest
        job id, sample index, completion id (`dataset_rows`' key)."""
        rows = np.flatnonzero(keep)
        if not len(rows):
            return keep
        not_best = ~np.isin(cid[rows], self.best)
        minus = np.where(has_score[rows], -score[rows], np.inf)
        order = np.lexsort(
            (
                cid[rows],
                col["sample_index"][rows],
                col["job_id"][rows],
                minus,
                not_best,
                group[rows],
            )
        )
        sorted_group = group[rows][order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = sorted_group[1:] != sorted_group[:-1]
        chosen = rows[order[first]]
        if np.isnan(minus).any():
            # NaN scores: Python's min() over tuples decides (order-dependent); do exactly that.
            for g in np.unique(group[rows][np.isnan(minus)]).tolist():
                members = rows[group[rows] == g].tolist()
                pick = min(
                    members,
                    key=lambda i: (
                        not np.isin(cid[i], self.best),
                        -(score[i] if has_score[i] else float("-inf")),
                        col["job_id"][i],
                        col["sample_index"][i],
                        cid[i],
                    ),
                )
                chosen = np.where(group[chosen] == g, pick, chosen)
        if len(rows) > len(chosen):
            self.stats["dropped_per_prompt"] += len(rows) - len(chosen)
        out = np.zeros_like(keep)
        out[chosen] = True
        return out

    def _dedupe_pairs(
        self, keep: np.ndarray, group: np.ndarray, target: pa.StringArray
    ) -> np.ndarray:
        """Drop a row whose target repeats an earlier row's of the same prompt."""
        rows = np.flatnonzero(keep)
        if len(rows) < 2:
            return keep
        g = group[rows]
        texts = target.take(pa.array(rows))
        repeat = np.zeros(len(rows), dtype=bool)
        # Compare each row with the 1st, 2nd, … row before it while any prompt is that long;
        # prompts with very many samples are hashed instead.
        longest = int(np.max(np.unique(g, return_counts=True)[1]))
        if longest <= 8:
            for back in range(1, longest):
                same = g[back:] == g[:-back]
                if not same.any():
                    break
                equal = pc.equal(texts[back:], texts[:-back]).to_numpy(zero_copy_only=False)
                repeat[back:] |= same & equal
        else:
            codes = pc.dictionary_encode(texts).indices.to_numpy()
            key = g.astype(np.int64) * (int(codes.max()) + 1) + codes
            _, first = np.unique(key, return_index=True)
            repeat[:] = True
            repeat[first] = False
        if repeat.any():
            self.stats["dropped_duplicates"] += int(repeat.sum())
        out = keep.copy()
        out[rows[repeat]] = False
        return out


class RowBatches:
    """The recipe's rows, whole prompts per batch, from the COPY stream (started at once, so the
    query runs while the caller does other work)."""

    def __init__(
        self,
        *,
        project: Project,
        recipe: Recipe,
        stats: Counter[str],
        batch_rows: int,
        after: Callable[[], Any] | None = None,
        topk_bytes: bool = True,
    ) -> None:
        self._names = _variable_fields(recipe)
        self._selection = Selection(project=project, recipe=recipe, stats=stats)
        sql, params = copy_sql(project=project, recipe=recipe, topk_bytes=topk_bytes)
        self._reader = CopyReader(sql, params, batch_rows=batch_rows, after=after)
        self.after = self._reader.after

    def __iter__(self) -> Iterator[RowBatch]:
        for data, lengths in self._reader:
            batch = self._selection.batch(_parse(data, lengths, self._names))
            if batch is not None:
                yield batch

    def close(self) -> None:
        self._reader.close()
