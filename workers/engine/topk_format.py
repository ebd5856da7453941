"""Compact binary form of a teacher's per-token top-k log-probabilities.

One record holds one completion: the generated tokens and, per generated token, the top-k
alternatives and their log-probabilities. Generation jobs write records (stored on the
`Completion.topk` column and concatenated into shard files on export) and the training engine
reads them, so both sides share this module. It needs only numpy.

Layout (little-endian), then zlib-compressed as a whole after the 4-byte magic:
    magic  b"DTK1"
    u8     flags: bit0 = tokens are strings (API teachers without ids), bit1 = 32-bit ids
    u32    T (generated tokens), u8 K
    ids    [T]    generated token ids (u16 or u32), or string-table indices when bit0
    topk   [T, K] alternative ids, same width
    lp     [T, K] float16 log-probabilities (natural log), -inf padding where fewer than K came
    table  when bit0: u32 count, then per string u16 length + UTF-8 bytes
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

MAGIC = b"DTK1"
_FLAG_STRINGS = 1
_FLAG_WIDE = 2


class TopkFormatError(ValueError):
    pass


@dataclass
class TopkRecord:
    token_ids: np.ndarray  # [T] int64
    topk_ids: np.ndarray  # [T, K] int64
    topk_logprobs: np.ndarray  # [T, K] float16
    strings: list[str] | None = None  # when ids index into this table instead of a vocabulary

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.topk_ids.shape[1]) if self.topk_ids.ndim == 2 else 0

    def token_strings(self) -> list[str]:
        if self.strings is None:
            raise TopkFormatError("This record stores token ids, not strings.")
        return [self.strings[i] for i in self.token_ids.tolist()]


def from_token_strings(
    tokens: list[str], topk_tokens: list[list[str]], topk_logprobs: list[list[float]]
) -> TopkRecord:
    """Build a record from an API's string tokens (as OpenAI-compatible servers return them)."""
    table: dict[str, int] = {}

    def index(token: str) -> int:
        return table.setdefault(token, len(table))

    k = max((len(row) for row in topk_tokens), default=0)
    ids = np.array([index(t) for t in tokens], dtype=np.int64)
    alt = np.zeros((len(tokens), k), dtype=np.int64)
    lps = np.full((len(tokens), k), -np.inf, dtype=np.float16)
    for t, (row_tokens, row_lps) in enumerate(zip(topk_tokens, topk_logprobs, strict=True)):
        for j, (tok, lp) in enumerate(zip(row_tokens, row_lps, strict=True)):
            alt[t, j] = index(tok)
            lps[t, j] = lp
    return TopkRecord(ids, alt, lps, strings=list(table))


def encode(record: TopkRecord) -> bytes:
    token_ids = np.asarray(record.token_ids, dtype=np.int64)
    topk_ids = np.asarray(record.topk_ids, dtype=np.int64)
    lps = np.asarray(record.topk_logprobs, dtype=np.float16)
    t = token_ids.shape[0]
    k = topk_ids.shape[1] if topk_ids.ndim == 2 else 0
    if topk_ids.shape != (t, k) or lps.shape != (t, k):
        raise TopkFormatError(f"shapes disagree: ids {topk_ids.shape}, logprobs {lps.shape}, T={t}")
    if k > 255:
        raise TopkFormatError("K must be at most 255")
    highest = max(int(token_ids.max(initial=0)), int(topk_ids.max(initial=0)))
    if min(int(token_ids.min(initial=0)), int(topk_ids.min(initial=0))) < 0:
        raise TopkFormatError("token ids must be non-negative")
    wide = highest >= 2**16
    flags = (_FLAG_STRINGS if record.strings is not None else 0) | (_FLAG_WIDE if wide else 0)
    id_dtype = np.dtype("<u4") if wide else np.dtype("<u2")
    parts = [
        struct.pack("<BIB", flags, t, k),
        token_ids.astype(id_dtype).tobytes(),
        topk_ids.astype(id_dtype).tobytes(),
        lps.astype("<f2").tobytes(),
    ]
    if record.strings is not None:
        parts.append(struct.pack("<I", len(record.strings)))
        for s in record.strings:
            raw = s.encode("utf-8", "surrogatepass")
            parts.append(struct.pack("<H", len(raw)) + raw)
    return MAGIC + zlib.compress(b"".join(parts), 6)


def decode(blob: bytes | memoryview) -> TopkRecord:
    blob = bytes(blob)
    if blob[:4] != MAGIC:
        raise TopkFormatError("not a DTK1 top-k record")
    try:
        raw = zlib.decompress(blob[4:])
    except zlib.error as exc:
        raise TopkFormatError(f"corrupt top-k record: {exc}") from exc
    flags, t, k = struct.unpack_from("<BIB", raw, 0)
    offset = struct.calcsize("<BIB")
    id_dtype = np.dtype("<u4") if flags & _FLAG_WIDE else np.dtype("<u2")

    def take(dtype: np.dtype, count: int) -> np.ndarray:
        nonlocal offset
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        offset += arr.nbytes
        return arr

    token_ids = take(id_dtype, t).astype(np.int64)
    topk_ids = take(id_dtype, t * k).astype(np.int64).reshape(t, k)
    lps = take(np.dtype("<f2"), t * k).astype(np.float16).reshape(t, k)
    strings = None
    if flags & _FLAG_STRINGS:
        (count,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        strings = []
        for _ in range(count):
            (length,) = struct.unpack_from("<H", raw, offset)
            offset += 2
            strings.append(raw[offset : offset + length].decode("utf-8", "surrogatepass"))
            offset += length
    return TopkRecord(token_ids, topk_ids, lps, strings)


def mean_logprob(record: TopkRecord) -> float | None:
    """Mean log-prob of the generated tokens, where they appear in their own top-k."""
    if record.num_tokens == 0 or record.k == 0:
        return None
    hits = record.topk_ids == record.token_ids[:, None]
    found = hits.any(axis=1)
    if not found.any():
        return None
    chosen = np.where(hits, record.topk_logprobs.astype(np.float32), 0.0).sum(axis=1)
    return float(chosen[found].mean())


# Shards: records concatenated in one file, addressed by (offset, length).
def append_to_shard(fh: BinaryIO, blob: bytes) -> tuple[int, int]:
    offset = fh.tell()
    fh.write(blob)
    return offset, len(blob)


def read_from_shard(path: str, offset: int, length: int) -> TopkRecord:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return decode(fh.read(length))
