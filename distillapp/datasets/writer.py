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


class VersionWriter:
    """Appends rows to every file of a version folder; `close()` returns the content hash."""

    def __init__(self, folder: Path, *, row_group_size: int = 50_000) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self._parquet = pq.ParquetWriter(folder / "rows.parquet", SCHEMA, compression="zstd")
        self._jsonl: dict[str, IO[str]] = {
            name: open(folder / f"{name}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            for name in ("train", "validation", "train_kd", "validation_kd")
        }
        self._shard = open(folder / SHARD, "wb")  # noqa: SIM115
        self._sha = hashlib.sha256()
        self._row_group_size = row_group_size
        self._pending: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.rows = 0
        self.kd_rows = 0

    def add(self, rows: Iterable[Any], topk: dict[int, bytes]) -> list[tuple[str, str]]:
        """Write rows (selectors.Row); `topk` maps completion id → DTK1 bytes for rows that carry
        the teacher's top-k. Returns (row key, row sha256) of each row written."""
        out = []
        for row in rows:
            blob = topk.get(row.completion_id) if row.has_topk else None
            offset = length = None
            kd = False
            if blob:
                offset, length = topk_format.append_to_shard(self._shard, blob)
                kd = topk_has_ids(blob)
            messages_json = _dumps(row.messages)
            canonical = _dumps(
                [
                    row.split,
                    row.messages,
                    row.target,
                    hashlib.sha256(blob).hexdigest() if blob else None,
                ]
            )
            row_sha = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
            self._sha.update(canonical.encode("utf-8", "surrogatepass"))
            self._sha.update(b"\n")
            record: dict[str, Any] = {"messages": row.messages, "completion": row.target}
            line = _dumps(record)
            self._jsonl[row.split].write(line + "\n")
            if kd:
                record["topk_ref"] = {"path": SHARD, "offset": offset, "length": length}
                self._jsonl[f"{row.split}_kd"].write(_dumps(record) + "\n")
                self.kd_rows += 1
            values = {
                "row_key": row.key,
                "row_sha256": row_sha,
                "split": row.split,
                "prompt_id": row.prompt_id,
                "prompt_set_id": row.prompt_set_id,
                "job_id": row.job_id,
                "completion_id": row.completion_id,
                "sample_index": row.sample_index,
                "messages": messages_json,
                "completion": row.target,
                "source": row.source,
                "teacher_exact": row.teacher_exact,
                "kd": kd,
                "judge_score": row.judge_score,
                "topk_offset": offset,
                "topk_length": length,
            }
            for name, value in values.items():
                self._pending[name].append(value)
            self.rows += 1
            out.append((row.key, row_sha))
        if len(self._pending["row_key"]) >= self._row_group_size:
            self._flush()
        return out

    def _flush(self) -> None:
        if not self._pending["row_key"]:
            return
        table = pa.table(self._pending, schema=SCHEMA)
        self._parquet.write_table(table)
        self._pending = {name: [] for name in SCHEMA.names}

    def close(self) -> str:
        self._flush()
        self._parquet.close()
        for fh in self._jsonl.values():
            fh.close()
        self._shard.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # best effort while failing anyway
            self._parquet.close()
        for fh in self._jsonl.values():
            fh.close()
        self._shard.close()


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

    table = pq.read_table(path, columns=["row_key", "messages", "completion"])
    table = table.filter(pc.is_in(table.column("row_key"), value_set=pa.array(keys)))
    return {r["row_key"]: r for r in table.to_pylist()}
