"""Writing a version's files: Parquet (canonical), the engine's JSONL, and a DTK1 top-k shard.

Everything goes into one folder that the build creates under a temporary name and renames into
place at the end, so nothing partial is ever visible. Plain pyarrow, numpy and files; no Django.

Files of a version folder:
- `rows.parquet`: every row (the canonical form; `row_sha256` of each row, `topk_offset/length`
  into `topk.bin`);
- `train.jsonl`, `validation.jsonl`: the engine's format (docs/engine.md) for `sft`;
- `train_kd.jsonl`, `validation_kd.jsonl`: the rows usable for logit distillation (teacher's own
  output with token ids and top-k), each with a `topk_ref` into `topk.bin`, for `kd`;
- `topk.bin`: the DTK1 records, concatenated;
- `hf.zip`: a Hugging Face `datasets` folder (`HfZip`), when the worker has `datasets`;
- `manifest.json`, `README.md`: sha256, counts and lineage (written by the service).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillapp.datasets.batches import (
    MESSAGE_TYPE,
    RowBatch,
    messages_arrow,
    prompt_chars,
    with_assistant,
)
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
# Columns with few distinct values; dictionary-encoding the others (keys, hashes, texts) only
# costs time before Parquet falls back to plain pages.
DICTIONARY_COLUMNS = ["split", "source"]
# Min/max statistics serve readers that filter (by key, ids); none filter by text or hash.
STATISTICS_COLUMNS = [
    f.name for f in SCHEMA if f.name not in ("row_sha256", "messages", "completion")
]


def topk_has_ids(blob: bytes | memoryview) -> bool:
    """Whether a DTK1 record holds token ids (not an API's token strings), from its flags byte."""
    if blob[:4] != topk_format.MAGIC:
        return False
    # Inflating one byte needs the block's Huffman tables, which sit at its start: a prefix
    # is enough (and keeps zlib from copying the rest as unconsumed input), else the record.
    head = zlib.decompressobj().decompress(blob[4:516], 1) or zlib.decompressobj().decompress(
        blob[4:], 1
    )
    return bool(head) and not head[0] & 1


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_encode = json.encoder.encode_basestring  # == json.dumps(str, ensure_ascii=False), in C
# What JSON escapes in a string: a target without these is its JSON string between quotes.
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'

# The Hugging Face export's rows: the chat (prompt + assistant target) and a few columns.
HF_SCHEMA = pa.schema(
    [
        ("messages", MESSAGE_TYPE),
        ("prompt_id", pa.int64()),
        ("source", pa.string()),
        ("teacher_exact", pa.bool_()),
    ]
)
HF_ZIP = "hf.zip"


@dataclass(frozen=True)
class HfLayout:
    """What `datasets.DatasetDict.save_to_disk` writes for a split of one data file, besides the
    rows (`exports.hf_layout()` takes it from the installed `datasets`)."""

    schema_metadata: dict[bytes, bytes]  # of the data file's Arrow schema
    dataset_info: str  # dataset_info.json
    state: dict[str, Any]  # state.json
    data_file: str  # the data file's name in the split's folder

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema_metadata": {
                    k.decode(): v.decode() for k, v in self.schema_metadata.items()
                },
                "dataset_info": self.dataset_info,
                "state": self.state,
                "data_file": self.data_file,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> HfLayout:
        data = json.loads(text)
        return cls(
            schema_metadata={k.encode(): v.encode() for k, v in data["schema_metadata"].items()},
            dataset_info=str(data["dataset_info"]),
            state=dict(data["state"]),
            data_file=str(data["data_file"]),
        )


class HfZip:
    """`hf.zip`: a `save_to_disk` folder under `dataset/` (and the card as `dataset/README.md`),
    written as the rows come: the train split's Arrow stream goes straight into its deflated
    entry, the validation split into a temporary stream added at the end. Nothing is written
    twice and no split is ever whole in memory."""

    def __init__(self, folder: Path, layout: HfLayout) -> None:
        self._layout = layout
        self._schema = HF_SCHEMA.with_metadata(layout.schema_metadata)
        self._zip = zipfile.ZipFile(
            folder / HF_ZIP, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
        )
        self._entry = self._zip.open(f"dataset/train/{layout.data_file}", "w", force_zip64=True)
        self._train = pa.ipc.new_stream(self._entry, self._schema)
        self._validation_path = folder / ".hf-validation.arrow"
        self._validation: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, split: str, batch: pa.RecordBatch) -> None:
        if split == "train":
            self._train.write_batch(batch)
            return
        if self._validation is None:
            self._validation = pa.ipc.new_stream(str(self._validation_path), self._schema)
        self._validation.write_batch(batch)

    def finish(self, card: str) -> None:
        """Close the splits and add the folder's JSON files and the card."""
        self._train.close()
        self._entry.close()
        splits = ["train"]
        if self._validation is not None:
            self._validation.close()
            self._zip.write(self._validation_path, f"dataset/validation/{self._layout.data_file}")
            self._validation_path.unlink()
            splits.append("validation")
        state = json.dumps(self._layout.state, indent=2, sort_keys=True)
        for split in splits:
            self._zip.writestr(f"dataset/{split}/dataset_info.json", self._layout.dataset_info)
            self._zip.writestr(f"dataset/{split}/state.json", state)
        self._zip.writestr("dataset/dataset_dict.json", json.dumps({"splits": splits}))
        self._zip.writestr("dataset/README.md", card)
        self._zip.close()

    def abort(self) -> None:
        for closing in (self._train, self._entry, self._validation, self._zip):
            with contextlib.suppress(Exception):  # best effort while failing anyway
                if closing is not None:
                    closing.close()
        self._validation_path.unlink(missing_ok=True)


def _bytes_of(array: pa.Array) -> tuple[pa.Buffer | bytes, np.ndarray]:
    """The values of a string/binary array as one buffer and offsets into it (from 0)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ].astype(np.int64)
    data = array.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return b"", offsets - offsets[0]
    return data[int(offsets[0]) : int(offsets[-1])], offsets - offsets[0]


def _json_strings(texts: pa.StringArray) -> pa.StringArray:
    """Each string as JSON (`json.dumps(s, ensure_ascii=False)`): quotes added in Arrow, and the
    C encoder of the standard library for the strings that need escapes."""
    needs = pc.match_substring_regex(texts, _NEEDS_ESCAPE)
    quoted = pc.binary_join_element_wise('"', texts, '"', "")
    if not pc.any(needs).as_py():
        return quoted
    escaped = pa.array(map(_encode, texts.filter(needs).to_pylist()), type=pa.string())
    return pc.replace_with_mask(quoted, needs, escaped)


def _join(*parts: Any) -> pa.StringArray:
    return pc.binary_join_element_wise(*parts, "")


class _Records:
    """A batch's top-k records: where they go in the shard, their hashes and flags."""

    def __init__(self, topk: pa.BinaryArray, shard_at: int) -> None:
        n = len(topk)
        self.has = topk.is_valid().to_numpy(zero_copy_only=False)
        # Null records take no bytes: the array's data is exactly what the shard gets.
        self.data, rel = _bytes_of(topk)
        begin, end = rel[:-1][self.has], rel[1:][self.has]
        self.offset = np.zeros(n, dtype=np.int64)
        self.offset[self.has] = shard_at + begin
        self.length = np.zeros(n, dtype=np.int64)
        self.length[self.has] = end - begin
        self._spans = (begin.tolist(), end.tolist())
        self.sha_json = np.full(n, "null", dtype=object)
        self.kd = np.zeros(n, dtype=bool)

    def hash(self) -> _Records:
        """Each record's SHA-256 (as JSON) and whether it has token ids: zlib and hashlib let go
        of the GIL, so this runs on a thread beside the batch's other work."""
        view = memoryview(self.data)
        records = [view[a:b] for a, b in zip(*self._spans, strict=True)]
        sha256 = hashlib.sha256
        self.sha_json[self.has] = [f'"{sha256(r).hexdigest()}"' for r in records]
        self.kd[self.has] = [topk_has_ids(r) for r in records]
        return self


class VersionWriter:
    """Appends batches of rows (`batches.RowBatch`) to every file of a version folder; `close()`
    returns the content hash.

    Per batch, in Arrow: the rows' canonical JSON, JSONL lines and columns; per row in Python only
    its SHA-256 (and, for rows with top-k, the record's SHA-256 and flags byte, on a second
    thread). Files are written on a third thread, one batch behind, so the writes (and Parquet's
    compression) overlap the next batch. Memory: two batches of output, whatever the row count."""

    def __init__(
        self, folder: Path, *, hf: HfLayout | None = None, row_group_size: int = 20_000
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self.hf = HfZip(folder, hf) if hf is not None else None
        self._parquet = pq.ParquetWriter(
            folder / "rows.parquet",
            SCHEMA,
            compression="zstd",
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=STATISTICS_COLUMNS,
        )
        self._jsonl: dict[str, IO[bytes]] = {
            name: open(folder / f"{name}.jsonl", "wb")  # noqa: SIM115
            for name in ("train", "validation", "train_kd", "validation_kd")
        }
        self._shard = open(folder / SHARD, "wb")  # noqa: SIM115
        self._shard_size = 0
        self._sha = hashlib.sha256()
        self._row_group_size = row_group_size
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-write")
        self._topk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-topk")
        self._writing: Future[None] | None = None
        self.rows = 0
        self.kd_rows = 0
        self.prompt_chars = 0

    def add(self, batch: RowBatch) -> list[str]:
        """Write a batch; returns each row's SHA-256 (hex), in order."""
        n = len(batch)
        if not n:
            return []
        records = _Records(batch.topk, self._shard_size)
        self._shard_size += len(records.data)
        hashing = self._topk.submit(records.hash)
        index = batch.prompt_index
        validation = batch.validation_rows
        split = pc.if_else(pa.array(validation), "validation", "train")
        messages_json = batch.messages_json.take(pa.array(index))
        target_json = _json_strings(batch.target)
        hashing.result()

        # == dumps([split, messages, target, topk sha256 or None]) + "\n", per row
        canonical = _join(
            '["', split, '",', messages_json, ",", target_json, ",", pa.array(records.sha_json),
            "]\n",
        )  # fmt: skip
        text, ends = _bytes_of(canonical)
        view = memoryview(text)
        sha256 = hashlib.sha256
        row_sha = [
            sha256(view[a:b]).hexdigest()
            for a, b in zip(ends[:-1].tolist(), (ends[1:] - 1).tolist(), strict=True)
        ]

        # == dumps({"messages": ..., "completion": ...}) (keys sorted), per row; rows usable for
        # KD also get {"topk_ref": {"length", "offset", "path"}}
        line = _join('{"completion":', target_json, ',"messages":', messages_json, "}\n")
        kd_at = np.flatnonzero(records.kd)
        kd_line = _join(
            '{"completion":',
            target_json.take(pa.array(kd_at)),
            ',"messages":',
            messages_json.take(pa.array(kd_at)),
            ',"topk_ref":{"length":',
            pa.array(records.length[kd_at]).cast(pa.string()),
            ',"offset":',
            pa.array(records.offset[kd_at]).cast(pa.string()),
            f',"path":"{SHARD}"}}}}\n',
        )
        self.kd_rows += len(kd_at)
        table = pa.Table.from_arrays(
            [
                _join(
                    pa.array(batch.prompt_id).cast(pa.string()),
                    ":",
                    pa.array(batch.completion_id).cast(pa.string()),
                ),
                pa.array(row_sha, type=pa.string()),
                split,
                pa.array(batch.prompt_id),
                pa.array(batch.prompt_set_ids[index]),
                pa.array(batch.job_id),
                pa.array(batch.completion_id),
                pa.array(batch.sample_index, type=pa.int32()),
                messages_json,
                batch.target,
                batch.source,
                pa.array(batch.teacher_exact),
                pa.array(records.kd),
                batch.judge_score,
                pa.array(records.offset, mask=~records.has),
                pa.array(records.length, mask=~records.has),
            ],
            schema=SCHEMA,
        )
        self.rows += n
        self._wait()
        self._writing = self._io.submit(
            self._write, batch, text, records.data, line, kd_line, validation, kd_at, table
        )
        return row_sha

    def _write(
        self,
        batch: RowBatch,
        canonical: Any,
        shard: Any,
        line: pa.StringArray,
        kd_line: pa.StringArray,
        validation: np.ndarray,
        kd_at: np.ndarray,
        table: pa.Table,
    ) -> None:
        """The batch's files, in order (on the write thread)."""
        self._sha.update(canonical)
        if len(shard):
            self._shard.write(shard)
        kd_validation = validation[kd_at]
        for name, rows, kd_rows in (
            ("train", ~validation, ~kd_validation),
            ("validation", validation, kd_validation),
        ):
            if rows.all():
                self._jsonl[name].write(_bytes_of(line)[0])
            elif rows.any():
                self._jsonl[name].write(_bytes_of(line.filter(pa.array(rows)))[0])
            if kd_rows.any():
                self._jsonl[f"{name}_kd"].write(_bytes_of(kd_line.filter(pa.array(kd_rows)))[0])
        self._pending.append(table)
        self._pending_rows += len(table)
        if self._pending_rows >= self._row_group_size:
            self._flush()
        prompts = messages_arrow(batch.messages_json)
        self.prompt_chars += int(prompt_chars(prompts)[batch.prompt_index].sum())
        if self.hf is not None:
            self._write_hf(self.hf, batch, prompts, validation)

    def _wait(self) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._parquet.write_table(table, row_group_size=max(len(table), 1))
        self._pending = []
        self._pending_rows = 0

    def _write_hf(
        self, hf: HfZip, batch: RowBatch, prompts: pa.ListArray, validation: np.ndarray
    ) -> None:
        for split, rows in (("train", ~validation), ("validation", validation)):
            if not rows.any():
                continue
            mask = pa.array(rows)
            chat = with_assistant(prompts, batch.prompt_index[rows], batch.target.filter(mask))
            hf.write(
                split,
                pa.record_batch(
                    [
                        chat,
                        pa.array(batch.prompt_id[rows]),
                        batch.source.filter(mask),
                        pa.array(batch.teacher_exact[rows]),
                    ],
                    schema=HF_SCHEMA,
                ),
            )

    def close(self) -> str:
        """Finish every file but `hf.zip` (`HfZip.finish`, once the card is written); returns
        the content hash."""
        self._wait()
        self._io.shutdown()
        self._topk.shutdown()
        self._flush()
        self._parquet.close()
        for fh in self._jsonl.values():
            fh.close()
        self._shard.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # best effort while failing anyway
            self._wait()
        self._io.shutdown(cancel_futures=True)
        self._topk.shutdown(cancel_futures=True)
        with contextlib.suppress(Exception):
            self._parquet.close()
        if self.hf is not None:
            self.hf.abort()
        for fh in self._jsonl.values():
            fh.close()
        self._shard.close()


# What the diff says of each new row.
ADDED, UNCHANGED, CHANGED = 0, 1, 2


class ParentRows:
    """A built version's rows (prompt id, completion id, key, sha256) in row order, read a batch
    at a time: the diff walks it beside the new rows (a merge of each batch of new rows with the
    parent rows up to the batch's last key), so its memory is a batch whatever the parent's size.
    """

    def __init__(self, path: Path, *, examples: int = 5, batch_size: int = 50_000) -> None:
        self._batches = pq.ParquetFile(path).iter_batches(
            batch_size=batch_size, columns=["prompt_id", "completion_id", "row_key", "row_sha256"]
        )
        self._pid = np.zeros(0, dtype=np.int64)
        self._cid = np.zeros(0, dtype=np.int64)
        self._key: list[str] = []
        self._sha: list[str] = []
        self.removed = 0
        self.removed_examples: list[str] = []
        self._examples = examples

    def _buffered(self) -> bool:
        """Parent rows in the buffer, reading the next batch when it is empty."""
        if not len(self._pid):
            batch = next(self._batches, None)
            if batch is None:
                return False
            self._pid = batch.column(0).to_numpy()
            self._cid = batch.column(1).to_numpy()
            self._key = batch.column(2).to_pylist()
            self._sha = batch.column(3).to_pylist()
        return True

    def _removed(self, keys: list[str]) -> None:
        self.removed += len(keys)
        room = self._examples - len(self.removed_examples)
        if room > 0:
            self.removed_examples += keys[:room]

    def match(self, prompt_id: np.ndarray, completion_id: np.ndarray, sha: list[str]) -> np.ndarray:
        """What each new row (in row order, after every earlier batch) is against the parent:
        ADDED, UNCHANGED or CHANGED. Parent rows passed over were removed."""
        n = len(prompt_id)
        kinds = np.full(n, ADDED, dtype=np.int8)
        if not n:
            return kinds
        last_p, last_c = int(prompt_id[-1]), int(completion_id[-1])
        while self._buffered():
            # The buffered parent rows whose key is at most the batch's last key.
            upto = int(
                np.count_nonzero(
                    (self._pid < last_p) | ((self._pid == last_p) & (self._cid <= last_c))
                )
            )
            if not upto:
                break
            pid, cid, keys, shas = self._pid[:upto], self._cid[:upto], self._key, self._sha
            both_p = np.concatenate([pid, prompt_id])
            both_c = np.concatenate([cid, completion_id])
            tag = np.concatenate([np.zeros(upto, np.int8), np.ones(n, np.int8)])
            order = np.lexsort((tag, both_c, both_p))
            sp, sc, st = both_p[order], both_c[order], tag[order]
            pair = np.flatnonzero(
                (sp[:-1] == sp[1:]) & (sc[:-1] == sc[1:]) & (st[:-1] == 0) & (st[1:] == 1)
            )
            parent_at, new_at = order[pair], order[pair + 1] - upto
            same = np.array(
                [
                    shas[p] == sha[r]
                    for p, r in zip(parent_at.tolist(), new_at.tolist(), strict=True)
                ],
                dtype=bool,
            )
            kinds[new_at] = np.where(same, UNCHANGED, CHANGED)
            gone = np.ones(upto, dtype=bool)
            gone[parent_at] = False
            self._removed([keys[i] for i in np.flatnonzero(gone).tolist()])
            self._pid, self._cid = self._pid[upto:], self._cid[upto:]
            del self._key[:upto], self._sha[:upto]
        return kinds

    def finish(self) -> None:
        while self._buffered():
            self._removed(self._key)
            self._pid = self._pid[:0]
            self._key, self._sha = [], []


class FileHashes:
    """SHA-256 of files, computed on two threads while the caller goes on (hashlib and file
    reads release the GIL)."""

    def __init__(self, paths: list[Path]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dataset-sha")
        # Largest first, so the two threads end together.
        paths = sorted(paths, key=lambda p: -p.stat().st_size)
        self._futures = {p.name: self._pool.submit(file_sha256, p) for p in paths}

    def get(self, name: str) -> str | None:
        future = self._futures.get(name)
        return future.result() if future is not None else None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def files_listing(folder: Path, *, hashes: FileHashes | None = None) -> dict[str, dict[str, Any]]:
    """Name → bytes and SHA-256 of the folder's files (`hashes`: those already being hashed)."""
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file():
            sha = hashes.get(p.name) if hashes is not None else None
            out[p.name] = {"bytes": p.stat().st_size, "sha256": sha or file_sha256(p)}
    return out


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
