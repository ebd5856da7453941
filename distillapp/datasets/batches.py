"""The rows of a build as columns: `RowBatch`, what the selectors hand the writer a batch at a time.

Two producers make them: `batch_from_rows` (from `selectors.Row` objects, every database) and the
PostgreSQL COPY stream (`pgstream`), which never makes a Python object per row. Both give the
same batch for the same rows, so the writer has one path and the files one form.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

if TYPE_CHECKING:
    from distillapp.datasets.selectors import Row

# A prompt's chat messages as Arrow (the Hugging Face export's `messages`, plus the target).
MESSAGE_FIELDS = [pa.field("role", pa.string()), pa.field("content", pa.string())]
MESSAGE_TYPE = pa.list_(pa.struct(MESSAGE_FIELDS))


def dumps(value: Any) -> str:
    """The canonical JSON of the files and the content hash (keys sorted, compact, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass
class RowBatch:
    """Rows in build order (prompt id, completion id). Per-prompt columns are indexed by
    `prompt_index` (one entry per row). A prompt's rows may go on in the next batch (the
    PostgreSQL stream keeps them together; `batch_from_rows` cuts anywhere)."""

    # one entry per prompt of the batch, in order
    prompt_ids: np.ndarray  # int64
    prompt_set_ids: np.ndarray  # int64
    validation: np.ndarray  # bool: the prompt is in the validation split
    messages_json: pa.StringArray  # canonical JSON (`dumps`) of the prompt's chat messages
    # one entry per row
    prompt_index: np.ndarray  # int64, non-decreasing
    completion_id: np.ndarray  # int64
    job_id: np.ndarray  # int64
    sample_index: np.ndarray  # int32
    target: pa.StringArray
    source: pa.StringArray  # review | edited | adjudicated | bulk | unreviewed
    teacher_exact: np.ndarray  # bool: the target is exactly the teacher's output
    judge_score: pa.DoubleArray  # nullable
    verdict_state: pa.StringArray  # nullable
    topk: pa.BinaryArray  # the DTK1 record, null unless the row carries the teacher's top-k

    def __len__(self) -> int:
        return len(self.completion_id)

    @property
    def prompt_id(self) -> np.ndarray:
        return self.prompt_ids[self.prompt_index]

    @property
    def validation_rows(self) -> np.ndarray:
        return self.validation[self.prompt_index]


def batch_from_rows(rows: Sequence[Row]) -> RowBatch:
    """A batch of `selectors.Row` objects (grouped by prompt, as `dataset_rows` yields them)."""
    prompt_ids: list[int] = []
    set_ids: list[int] = []
    validation: list[bool] = []
    messages_json: list[str] = []
    prompt_index: list[int] = []
    for row in rows:
        if not prompt_ids or prompt_ids[-1] != row.prompt_id:
            prompt_ids.append(row.prompt_id)
            set_ids.append(row.prompt_set_id)
            validation.append(row.split == "validation")
            messages_json.append(row.messages_json or dumps(row.messages))
        prompt_index.append(len(prompt_ids) - 1)
    return RowBatch(
        prompt_ids=np.array(prompt_ids, dtype=np.int64),
        prompt_set_ids=np.array(set_ids, dtype=np.int64),
        validation=np.array(validation, dtype=bool),
        messages_json=pa.array(messages_json, type=pa.string()),
        prompt_index=np.array(prompt_index, dtype=np.int64),
        completion_id=np.array([r.completion_id for r in rows], dtype=np.int64),
        job_id=np.array([r.job_id for r in rows], dtype=np.int64),
        sample_index=np.array([r.sample_index for r in rows], dtype=np.int32),
        target=pa.array([r.target for r in rows], type=pa.string()),
        source=pa.array([r.source for r in rows], type=pa.string()),
        teacher_exact=np.array([r.teacher_exact for r in rows], dtype=bool),
        judge_score=pa.array([r.judge_score for r in rows], type=pa.float64()),
        verdict_state=pa.array([r.verdict_state for r in rows], type=pa.string()),
        topk=pa.array([r.topk if r.has_topk else None for r in rows], type=pa.binary()),
    )


def messages_arrow(messages_json: pa.StringArray) -> pa.ListArray:
    """Canonical message JSON (one per prompt) as Arrow lists of {role, content}, parsed in C++."""
    if len(messages_json) == 0:
        return pa.array([], type=MESSAGE_TYPE)
    lines = pc.binary_join_element_wise('{"m":', messages_json, "}\n", "")
    data = lines.buffers()[2]
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset :]
    raw = data[offsets[0] : offsets[len(lines)]] if data is not None else b""
    table = pajson.read_json(
        pa.BufferReader(raw),
        read_options=pajson.ReadOptions(block_size=max(1 << 20, len(raw) + 1)),
        parse_options=pajson.ParseOptions(
            explicit_schema=pa.schema([pa.field("m", MESSAGE_TYPE)]),
            unexpected_field_behavior="error",
        ),
    )
    column = table.column("m").combine_chunks()
    if len(column) != len(messages_json):  # cannot happen: one line per prompt
        raise ValueError("message JSON did not parse one list per prompt")
    return column


def with_assistant(
    prompts: pa.ListArray, index: np.ndarray, target: pa.StringArray
) -> pa.ListArray:
    """Per row: its prompt's messages (`prompts[index]`) followed by the assistant's target."""
    n = len(index)
    starts = np.asarray(prompts.offsets, dtype=np.int64)
    lengths = (starts[1:] - starts[:-1])[index]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=offsets[1:])
    # Where each output entry comes from: the prompts' flattened values, then the targets.
    values = prompts.values
    source = np.empty(int(offsets[-1]), dtype=np.int64)
    assistant_at = offsets[1:] - 1
    source[assistant_at] = len(values) + np.arange(n)
    prompt_slots = np.ones(len(source), dtype=bool)
    prompt_slots[assistant_at] = False
    if lengths.sum():
        first = starts[:-1][index]
        run = np.repeat(first - offsets[:-1], lengths)
        source[prompt_slots] = run + np.flatnonzero(prompt_slots)
    assistant = pa.StructArray.from_arrays(
        [pa.array(np.full(n, "assistant", dtype=object), type=pa.string()), target],
        fields=MESSAGE_FIELDS,
    )
    combined = pa.concat_arrays([values, assistant])
    return pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), combined.take(pa.array(source))
    )


def prompt_chars(prompts: pa.ListArray) -> np.ndarray:
    """Characters of each prompt's message contents (as `len()` counts them: code points)."""
    starts = np.asarray(prompts.offsets, dtype=np.int64)
    lengths = pc.utf8_length(prompts.values.field("content")).to_numpy(zero_copy_only=False)
    totals = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return totals[starts[1:]] - totals[starts[:-1]]


def value_counts(values: pa.Array, *, empty: str | None = None) -> dict[str, int]:
    """Counts of each value; null (and "", when `empty` is given) counted as `empty`."""
    out: dict[str, int] = {}
    for item in pc.value_counts(values).to_pylist():
        key = item["values"]
        if empty is not None and not key:
            key = empty
        out[key] = out.get(key, 0) + item["counts"]
    return out


class BatchCounts:
    """What a version holds, counted as its batches go by: rows by split and source, prompts,
    rows with the teacher's exact output and with its top-k, target characters. A build's totals
    and the build form's preview are the same counts."""

    def __init__(self) -> None:
        self.sources: dict[str, int] = {}
        self.counts = dict.fromkeys(
            ("train", "validation", "prompts", "teacher_exact", "topk_rows", "target_chars"), 0
        )
        self._last_prompt: int | None = None

    def add(self, batch: RowBatch) -> None:
        n = len(batch)
        counts = self.counts
        validation = int(batch.validation_rows.sum())
        counts["validation"] += validation
        counts["train"] += n - validation
        counts["teacher_exact"] += int(batch.teacher_exact.sum())
        counts["topk_rows"] += n - batch.topk.null_count
        counts["target_chars"] += int(pc.sum(pc.utf8_length(batch.target)).as_py() or 0)
        # A prompt's rows may go on from one batch to the next.
        counts["prompts"] += len(batch.prompt_ids) - int(batch.prompt_ids[0] == self._last_prompt)
        self._last_prompt = int(batch.prompt_ids[-1])
        for key, count in value_counts(batch.source).items():
            self.sources[key] = self.sources.get(key, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts, "sources": dict(sorted(self.sources.items()))}
