"""Writing a version's files: Parquet (canonical), the engine's JSONL, and a DTK1 top-k shard.

Everything goes into one folder that the build creates under a temporary name and renames into
place at the end, so nothing partial is ever visible. Plain pyarrow and files; no Django.

Files of a version folder:
- `rows.parquet`: every row (the canonical form; `row_sha256` of each row, `topk_offset/length`
  into `topk.bin`);
- `train.jsonl`, `validation.jsonl`: the engine's format (docs/engine.md) for `sft`;
- `train_kd.jsonl`, `validation_kd.jsonl`: the rows usable for logit distillation (teacher's own
  output with token ids and top-k), each with a `topk_ref` into `topk.bin`, for `kd`;
- `topk.bin`: the DTK1 records, concatenated;
- `manifest.json`: sha256, counts and lineage (written by the service).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from workers.engine import topk_format

SCHEMA = pa.schema(
    [
        ("row_key", pa.string()),
        ("row_sha256", pa.string()),
        ("split", pa.string()),
        ("prompt_id", pa.int64()),
        ("prompt_set_id", pa.int64()),
        ("job_id", pa.int64()),
        ("completion_id", pa.int64()),
        ("sample_index", pa.int32()),
        ("messages", pa.string()),  # the prompt as chat messages, JSON
        ("completion", pa.string()),  # the target
        ("source", pa.string()),
        ("teacher_exact", pa.bool_()),
        ("kd", pa.bool_()),  # has the teacher's token ids and top-k (usable for logit KD)
        ("judge_score", pa.float64()),
        ("topk_offset", pa.int64()),
        ("topk_length", pa.int64()),
    ]
)
SHARD = "topk.bin"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def topk_has_ids(blob: bytes) -> bool:
    """Whether a DTK1 record holds token ids (not an API's token strings), from its flags byte."""
    if blob[:4] != topk_format.MAGIC:
        return False
    head = zlib.decompressobj().decompress(blob[4:], 1)
    return bool(head) and not head[0] & 1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_encode = json.encoder.encode_basestring  # == json.dumps(str, ensure_ascii=False), in C

# The Hugging Face export's rows: the chat (prompt + assistant target) and a few columns,
# written as Arrow IPC streams (what `datasets.Dataset.from_file` maps) a row group at a time.
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
HF_SCHEMA = pa.schema(
    [
        ("messages", MESSAGE_TYPE),
        ("prompt_id", pa.int64()),
        ("source", pa.string()),
        ("teacher_exact", pa.bool_()),
    ]
)


def hf_stream_name(split: str) -> str:
    return f".hf-{split}.arrow"


class VersionWriter:
    """Appends rows to every file of a version folder; `close()` returns the content hash.

    Per row: one JSON encoding of the target (the prompt's messages come encoded once per
    prompt, `Row.messages_json`), one SHA-256, string joins; columns are built a row group at a
    time, so memory stays at one row group whatever the row count."""

    def __init__(self, folder: Path, *, row_group_size: int = 20_000) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self._parquet = pq.ParquetWriter(folder / "rows.parquet", SCHEMA, compression="zstd")
        self._jsonl: dict[str, IO[str]] = {
            name: open(folder / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            for name in ("train", "validation", "train_kd", "validation_kd")
        }
        self._shard = open(folder / SHARD, "wb")  # noqa: SIM115
        self._hf: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
        self._sha = hashlib.sha256()
        self._row_group_size = row_group_size
        self._pending: list[tuple[Any, ...]] = []
        self._chats: list[tuple[list[dict[str, str]], str]] = []
        self.rows = 0
        self.kd_rows = 0

    def add(self, rows: Iterable[Any], topk: dict[int, bytes]) -> list[tuple[str, str]]:
        """Write rows (selectors.Row); `topk` maps completion id → DTK1 bytes for rows that carry
        the teacher's top-k. Returns (row key, row sha256) of each row written."""
        out = []
        sha_update = self._sha.update
        pending = self._pending
        chats = self._chats
        jsonl = self._jsonl
        for row in rows:
            blob = topk.get(row.completion_id) if row.has_topk else None
            offset = length = None
            kd = False
            messages_json = row.messages_json or _dumps(row.messages)
            target_json = _encode(row.target)
            if blob:
                offset, length = topk_format.append_to_shard(self._shard, blob)
                kd = topk_has_ids(blob)
                topk_sha = '"' + hashlib.sha256(blob).hexdigest() + '"'
            else:
                topk_sha = "null"
            # == _dumps([split, messages, target, topk sha256 or None])
            canonical = f'["{row.split}",{messages_json},{target_json},{topk_sha}]'.encode(
                "utf-8", "surrogatepass"
            )
            row_sha = hashlib.sha256(canonical).hexdigest()
            sha_update(canonical)
            sha_update(b"\n")
            # == _dumps({"messages": ..., "completion": ...}) (keys sorted)
            line = f'{{"completion":{target_json},"messages":{messages_json}'
            jsonl[row.split].write(line + "}\n")
            if kd:
                jsonl[f"{row.split}_kd"].write(
                    f'{line},"topk_ref":{{"length":{length},"offset":{offset},'
                    f'"path":"{SHARD}"}}}}\n'
                )
                self.kd_rows += 1
            key = f"{row.prompt_id}:{row.completion_id}"
            pending.append(
                (
                    key,
                    row_sha,
                    row.split,
                    row.prompt_id,
                    row.prompt_set_id,
                    row.job_id,
                    row.completion_id,
                    row.sample_index,
                    messages_json,
                    row.target,
                    row.source,
                    row.teacher_exact,
                    kd,
                    row.judge_score,
                    offset,
                    length,
                )
            )
            chats.append((row.messages, row.target))
            self.rows += 1
            out.append((key, row_sha))
        if len(pending) >= self._row_group_size:
            self._flush()
        return out

    def _flush(self) -> None:
        if not self._pending:
            return
        columns = list(zip(*self._pending, strict=True))
        table = pa.table(
            [pa.array(col, type=f.type) for col, f in zip(columns, SCHEMA, strict=True)],
            schema=SCHEMA,
        )
        self._parquet.write_table(table)
        self._write_hf(columns)
        self._pending = []
        self._chats = []

    def _write_hf(self, columns: list[tuple[Any, ...]]) -> None:
        splits = columns[2]
        for split in ("train", "validation"):
            index = [i for i, s in enumerate(splits) if s == split]
            if not index:
                continue
            offsets = [0]
            roles: list[str] = []
            contents: list[str] = []
            for i in index:
                messages, target = self._chats[i]
                for m in messages:
                    roles.append(m["role"])
                    contents.append(m["content"])
                roles.append("assistant")
                contents.append(target)
                offsets.append(len(roles))
            chat = pa.ListArray.from_arrays(
                pa.array(offsets, type=pa.int32()),
                pa.StructArray.from_arrays(
                    [pa.array(roles, type=pa.string()), pa.array(contents, type=pa.string())],
                    fields=list(MESSAGE_TYPE.value_type),
                ),
            )
            batch = pa.record_batch(
                [
                    chat,
                    pa.array([columns[3][i] for i in index], type=pa.int64()),
                    pa.array([columns[10][i] for i in index], type=pa.string()),
                    pa.array([columns[11][i] for i in index], type=pa.bool_()),
                ],
                schema=HF_SCHEMA,
            )
            if split not in self._hf:
                self._hf[split] = pa.ipc.new_stream(
                    str(self.folder / hf_stream_name(split)), HF_SCHEMA
                )
            self._hf[split].write_batch(batch)

    def close(self) -> str:
        self._flush()
        self._parquet.close()
        for fh in self._jsonl.values():
            fh.close()
        for stream in self._hf.values():
            stream.close()
        self._shard.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # best effort while failing anyway
            self._parquet.close()
        for stream in self._hf.values():
            with contextlib.suppress(Exception):
                stream.close()
        for fh in self._jsonl.values():
            fh.close()
        self._shard.close()


class ParentRows:
    """A built version's (row key, row sha256) in row order (prompt id, completion id), read a
    batch at a time: the diff walks it beside the new rows (a merge), so its memory is one batch
    whatever the parent's size."""

    def __init__(self, path: Path, *, examples: int = 5) -> None:
        self._batches = pq.ParquetFile(path).iter_batches(
            batch_size=20_000, columns=["prompt_id", "completion_id", "row_key", "row_sha256"]
        )
        self._rows: list[tuple[tuple[int, int], str, str]] = []
        self._i = 0
        self.removed = 0
        self.removed_examples: list[str] = []
        self._examples = examples

    def _current(self) -> tuple[tuple[int, int], str, str] | None:
        while self._i >= len(self._rows):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._rows = list(
                zip(
                    zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True),
                    batch.column(2).to_pylist(),
                    batch.column(3).to_pylist(),
                    strict=True,
                )
            )
            self._i = 0
        return self._rows[self._i]

    def _drop(self, key: str) -> None:
        self.removed += 1
        if len(self.removed_examples) < self._examples:
            self.removed_examples.append(key)
        self._i += 1

    def match(self, prompt_id: int, completion_id: int) -> str | None:
        """The parent's sha256 of this row, or None; parent rows passed over were removed."""
        order = (prompt_id, completion_id)
        while (cur := self._current()) is not None and cur[0] < order:
            self._drop(cur[1])
        if cur is not None and cur[0] == order:
            self._i += 1
            return cur[2]
        return None

    def finish(self) -> None:
        while (cur := self._current()) is not None:
            self._drop(cur[1])


def files_listing(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def read_keys(path: Path) -> dict[str, str]:
    """row key → row sha256 of a built version (for the diff against a new one)."""
    table = pq.read_table(path, columns=["row_key", "row_sha256"])
    return dict(
        zip(
            table.column("row_key").to_pylist(), table.column("row_sha256").to_pylist(), strict=True
        )
    )


def read_rows_by_key(path: Path, keys: list[str]) -> dict[str, dict[str, Any]]:
    if not keys:
        return {}
    import pyarrow.compute as pc

    # Filtered while reading, a row group at a time: never the whole file in memory.
    table = pq.read_table(
        path,
        columns=["row_key", "messages", "completion"],
        filters=pc.field("row_key").isin(keys),
    )
    return {r["row_key"]: r for r in table.to_pylist()}
