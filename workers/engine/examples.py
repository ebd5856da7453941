"""From validated records to token sequences: prompt formatting, reasoning, truncation, packing.

Label alignment: every sequence carries ``targets`` already shifted, so ``targets[p]`` is the token
that the logit at position p should predict (-100 where there is no loss). The top-k rows of KD
examples are stored from ``kd_start`` = the logit position that predicts the first generated token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workers.engine.data import Record

IGNORE = -100
THINK_RE = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
# Used only when the student tokenizer has no chat template of its own.
FALLBACK_ROLE_FORMAT = "<|{role}|>\n{content}\n"
FALLBACK_GENERATION_PROMPT = "<|assistant|>\n"


@dataclass
class Sequence:
    input_ids: list[int]
    targets: list[int]
    kd_start: int = 0
    topk_ids: np.ndarray | None = None  # [T, K]
    topk_logprobs: np.ndarray | None = None  # [T, K]


@dataclass
class TruncationReport:
    max_length: int
    truncated: int = 0
    dropped: int = 0
    lines: list[int] = field(default_factory=list)  # first few affected line numbers
    stripped_reasoning: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "truncated": self.truncated,
            "dropped": self.dropped,
            "lines": self.lines,
            "stripped_reasoning": self.stripped_reasoning,
        }

    def message(self) -> str:
        if not (self.truncated or self.dropped):
            return ""
        return (
            f"{self.truncated} example(s) were cut to max_length={self.max_length} and "
            f"{self.dropped} dropped because the prompt alone filled it (lines {self.lines[:10]})"
        )


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt as the student sees it at inference: its chat template plus generation prompt."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = "".join(FALLBACK_ROLE_FORMAT.format(**m) for m in messages) + FALLBACK_GENERATION_PROMPT
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def strip_think_text(text: str) -> str:
    return THINK_RE.sub("", text, count=1)


def _strip_think_ids(tokenizer: Any, ids: np.ndarray) -> int:
    """How many leading teacher tokens form a ``<think>…</think>`` block (0 when none).

    Decoding a prefix only grows its text, so the first prefix that contains the closing tag is
    found by binary search; trailing whitespace tokens go with the block.
    """
    as_list = ids.tolist()
    text = tokenizer.decode(as_list, skip_special_tokens=True)
    if not text.lstrip().startswith("<think>") or "</think>" not in text:
        return 0
    lo, hi = 1, len(as_list)
    while lo < hi:
        mid = (lo + hi) // 2
        if "</think>" in tokenizer.decode(as_list[:mid], skip_special_tokens=True):
            hi = mid
        else:
            lo = mid + 1
    while lo < len(as_list) and not tokenizer.decode([as_list[lo]]).strip():
        lo += 1
    return lo


def build_sequences(
    records: list[Record],
    tokenizer: Any,
    method: str,
    max_length: int,
    strip_reasoning: bool,
) -> tuple[list[Sequence], TruncationReport]:
    report = TruncationReport(max_length=max_length)
    eos = tokenizer.eos_token_id
    out: list[Sequence] = []
    for rec in records:
        prompt = prompt_ids(tokenizer, rec.messages)
        topk_ids = topk_lp = None
        if method == "kd":
            assert rec.token_ids is not None and rec.topk_ids is not None
            assert rec.topk_logprobs is not None
            target, topk_ids, topk_lp = rec.token_ids, rec.topk_ids, rec.topk_logprobs
            cut = _strip_think_ids(tokenizer, target) if strip_reasoning else 0
            if cut:
                report.stripped_reasoning += 1
                target, topk_ids, topk_lp = target[cut:], topk_ids[cut:], topk_lp[cut:]
            completion = [int(t) for t in target]
        else:
            text = rec.completion or ""
            if strip_reasoning:
                stripped = strip_think_text(text)
                report.stripped_reasoning += stripped != text
                text = stripped
            completion = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if eos is not None:
                completion.append(eos)
        if len(prompt) + 1 > max_length or not completion:
            report.dropped += 1
            if len(report.lines) < 20:
                report.lines.append(rec.line)
            continue
        if len(prompt) + len(completion) > max_length:
            report.truncated += 1
            if len(report.lines) < 20:
                report.lines.append(rec.line)
            completion = completion[: max_length - len(prompt)]
        ids = prompt + completion
        targets = [IGNORE] * (len(prompt) - 1) + completion + [IGNORE]
        seq = Sequence(input_ids=ids, targets=targets, kd_start=len(prompt) - 1)
        if topk_ids is not None and topk_lp is not None:
            seq.topk_ids = topk_ids[: len(completion)]
            seq.topk_logprobs = topk_lp[: len(completion)]
        out.append(seq)
    return out, report


def pack(sequences: list[Sequence], max_length: int) -> list[Sequence]:
    """Pack sft sequences into rows of at most max_length tokens, first-fit decreasing.

    Longest examples are placed first, each into the first row with room, so rows come out nearly
    full (in-order packing leaves the tail of almost every row empty). Targets keep their
    per-example masks, and the boundary position (the last token of one example predicting the
    first of the next) carries no loss. Simplification: attention is not separated between packed
    examples and positions keep counting, so a later example can attend to an earlier one; with
    short, independent examples this costs little and saves the padding.
    """
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    rows: list[list[int]] = []  # indices of the sequences in each row
    room: list[int] = []
    for i in order:
        size = len(sequences[i].input_ids)
        for r, free in enumerate(room):
            if size <= free:
                rows[r].append(i)
                room[r] -= size
                break
        else:
            rows.append([i])
            room.append(max_length - size)
    packed = []
    for members in rows:
        ids: list[int] = []
        targets: list[int] = []
        for i in sorted(members):
            ids.extend(sequences[i].input_ids)
            targets.extend(sequences[i].targets)
        packed.append(Sequence(ids, targets))
    return packed


class SequenceDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, sequences: list[Sequence]) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> Sequence:
        return self.sequences[i]


class Collator:
    """Right-pads a batch; adds dense top-k tensors aligned to logit positions for KD."""

    def __init__(self, pad_id: int, with_topk: bool) -> None:
        self.pad_id = pad_id
        self.with_topk = with_topk

    def __call__(self, batch: list[Sequence]) -> dict[str, torch.Tensor]:
        length = max(len(s.input_ids) for s in batch)
        n = len(batch)
        input_ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE, dtype=torch.long)
        for i, s in enumerate(batch):
            input_ids[i, : len(s.input_ids)] = torch.tensor(s.input_ids)
            attention[i, : len(s.input_ids)] = 1
            labels[i, : len(s.targets)] = torch.tensor(s.targets)
        out = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.with_topk:
            k = max(s.topk_ids.shape[1] for s in batch if s.topk_ids is not None)
            topk_ids = torch.zeros((n, length, k), dtype=torch.long)
            topk_lp = torch.full((n, length, k), float("-inf"), dtype=torch.float32)
            kd_mask = torch.zeros((n, length), dtype=torch.bool)
            for i, s in enumerate(batch):
                assert s.topk_ids is not None and s.topk_logprobs is not None
                t, kk = s.topk_ids.shape
                rows = slice(s.kd_start, s.kd_start + t)
                topk_ids[i, rows, :kk] = torch.from_numpy(s.topk_ids)
                topk_lp[i, rows, :kk] = torch.from_numpy(s.topk_logprobs.astype(np.float32))
                kd_mask[i, rows] = True
            out.update(topk_ids=topk_ids, topk_logprobs=topk_lp, kd_mask=kd_mask)
        return out
