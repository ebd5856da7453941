from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.engine.conftest import write_jsonl
from workers.engine import topk_format
from workers.engine.data import DataValidationError, load_records
from workers.engine.examples import (
    IGNORE,
    Collator,
    Sequence,
    build_sequences,
    pack,
    prompt_ids,
)
from workers.engine.toy import char_tokenizer

MSG = [{"role": "user", "content": "hi"}]


def test_validation_reports_every_bad_line_with_its_number(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": MSG, "completion": "ok"},
            "{not json",
            {"messages": [], "completion": "x"},
            {"messages": MSG},
            {"messages": [{"role": "user"}], "completion": "x"},
            {"messages": MSG, "completion": 3},
        ],
    )
    with pytest.raises(DataValidationError) as info:
        load_records(str(path), "sft")
    lines = [n for n, _ in info.value.errors]
    assert lines == [2, 3, 4, 5, 6]
    assert "not valid JSON" in info.value.errors[0][1]
    assert "line 4: 'completion' must be a non-empty string" in str(info.value)


def test_validation_stops_at_twenty_errors(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ["[]"] * 50)
    with pytest.raises(DataValidationError) as info:
        load_records(str(path), "sft")
    assert len(info.value.errors) == 20


def test_kd_lines_need_ids_and_consistent_shapes(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": MSG, "completion": "x"},
            {"messages": MSG, "token_ids": [5, 6], "topk_ids": [[5]], "topk_logprobs": [[-0.1]]},
            {"messages": MSG, "token_ids": [5], "topk_ids": [[5, 6]], "topk_logprobs": [[0.5, -1]]},
            {
                "messages": MSG,
                "token_ids": [5],
                "topk_ids": [list(range(21))],
                "topk_logprobs": [[-1.0] * 21],
            },
            {"messages": MSG, "token_ids": [5], "topk_ids": [[5]], "topk_logprobs": [[-0.2]]},
        ],
    )
    with pytest.raises(DataValidationError) as info:
        load_records(str(path), "kd")
    errors = dict(info.value.errors)
    assert sorted(errors) == [1, 2, 3, 4]
    assert "use method 'sft'" in errors[1]
    assert "one row per generated token" in errors[2]
    assert "<= 0" in errors[3]
    assert "1 to 20" in errors[4]


def test_string_token_records_are_refused_for_kd(tmp_path: Path) -> None:
    shard = tmp_path / "s.bin"
    rec = topk_format.from_token_strings(
        ["He", "llo"], [["He", "Hi"], ["llo", "y"]], [[-0.1, -2], [-0.2, -3]]
    )
    with open(shard, "wb") as fh:
        offset, length = topk_format.append_to_shard(fh, topk_format.encode(rec))
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"messages": MSG, "topk_ref": {"path": "s.bin", "offset": offset, "length": length}},
            {"messages": MSG, "token_ids": [1], "topk_ids": [["He"]], "topk_logprobs": [[-0.1]]},
        ],
    )
    with pytest.raises(DataValidationError) as info:
        load_records(str(path), "kd")
    for _, msg in info.value.errors:
        assert "teacher exposed no token ids" in msg and "sft" in msg


def test_shard_references_are_read_with_ids_and_logprobs(tmp_path: Path) -> None:
    shard = tmp_path / "s.bin"
    rec = topk_format.TopkRecord(
        np.array([7, 8]),
        np.array([[7, 9], [8, 10]]),
        np.array([[-0.1, -2.5], [-0.3, -1.5]], np.float16),
    )
    with open(shard, "wb") as fh:
        fh.write(b"junk")
        offset, length = topk_format.append_to_shard(fh, topk_format.encode(rec))
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"messages": MSG, "topk_ref": {"path": "s.bin", "offset": offset, "length": length}}],
    )
    (got,) = load_records(str(path), "kd")
    assert got.token_ids is not None and got.topk_ids is not None and got.topk_logprobs is not None
    assert got.token_ids.tolist() == [7, 8]
    assert got.topk_ids.tolist() == [[7, 9], [8, 10]]
    np.testing.assert_allclose(got.topk_logprobs, rec.topk_logprobs.astype(np.float32))


def _records(tmp_path: Path, rows: list[dict], method: str = "sft"):  # type: ignore[no-untyped-def]
    return load_records(str(write_jsonl(tmp_path / "d.jsonl", rows)), method)


def test_prompt_uses_chat_template_or_plain_fallback() -> None:
    plain = char_tokenizer()
    assert plain.decode(prompt_ids(plain, MSG)) == "<|user|>\nhi\n<|assistant|>\n"
    templated = char_tokenizer(
        chat_template="{% for m in messages %}Q:{{ m['content'] }}{% endfor %}A:"
    )
    assert templated.decode(prompt_ids(templated, MSG)) == "Q:hiA:"


def test_loss_only_on_completion_tokens(tmp_path: Path) -> None:
    tok = char_tokenizer()
    (seq,), report = build_sequences(
        _records(tmp_path, [{"messages": MSG, "completion": "yo"}]), tok, "sft", 100, False
    )
    p = len(prompt_ids(tok, MSG))
    assert seq.input_ids[p:] == tok("yo", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    # targets[i] is the token the logit at i predicts: only the completion (and eos) count.
    assert [t for t in seq.targets if t != IGNORE] == seq.input_ids[p:]
    assert seq.targets[p - 1] == seq.input_ids[p]
    assert report.truncated == 0


def test_truncation_is_reported_not_silent(tmp_path: Path) -> None:
    tok = char_tokenizer()
    rows = [
        {"messages": MSG, "completion": "short"},
        {"messages": MSG, "completion": "x" * 100},
        {"messages": [{"role": "user", "content": "y" * 100}], "completion": "z"},
    ]
    seqs, report = build_sequences(_records(tmp_path, rows), tok, "sft", 40, False)
    assert report.truncated == 1 and report.dropped == 1
    assert report.lines == [2, 3]
    assert "1 example(s) were cut to max_length=40" in report.message()
    assert all(len(s.input_ids) <= 40 for s in seqs) and len(seqs) == 2


def test_reasoning_can_be_kept_or_stripped(tmp_path: Path) -> None:
    tok = char_tokenizer()
    rows = [{"messages": MSG, "completion": "<think>2+2 is 4</think>\n4"}]
    (kept,), _ = build_sequences(_records(tmp_path, rows), tok, "sft", 200, False)
    (stripped,), report = build_sequences(_records(tmp_path, rows), tok, "sft", 200, True)
    p = len(prompt_ids(tok, MSG))
    assert tok.decode(kept.input_ids[p:], skip_special_tokens=True) == "<think>2+2 is 4</think>\n4"
    assert tok.decode(stripped.input_ids[p:], skip_special_tokens=True) == "4"
    assert report.stripped_reasoning == 1


def test_kd_reasoning_strip_drops_the_matching_topk_rows(tmp_path: Path) -> None:
    tok = char_tokenizer()
    ids = tok("<think>hm</think> 42", add_special_tokens=False)["input_ids"]
    row = {
        "messages": MSG,
        "token_ids": ids,
        "topk_ids": [[i] for i in ids],
        "topk_logprobs": [[-0.1 * n] for n in range(len(ids))],
    }
    (seq,), _ = build_sequences(_records(tmp_path, [row], "kd"), tok, "kd", 200, True)
    assert seq.topk_ids is not None and seq.topk_logprobs is not None
    assert tok.decode(seq.input_ids[seq.kd_start + 1 :]) == "42"
    assert seq.topk_ids[:, 0].tolist() == tok("42", add_special_tokens=False)["input_ids"]
    assert seq.topk_logprobs[0, 0] == pytest.approx(-0.1 * (len(ids) - 2))


def test_packing_keeps_each_examples_loss_mask(tmp_path: Path) -> None:
    tok = char_tokenizer()
    rows = [{"messages": MSG, "completion": c} for c in ["a", "bb", "ccc", "dddd"]]
    seqs, _ = build_sequences(_records(tmp_path, rows), tok, "sft", 64, False)
    packed = pack(seqs, 64)
    assert len(packed) < len(seqs)
    assert all(len(s.input_ids) <= 64 for s in packed)
    assert sum(len(s.input_ids) for s in packed) == sum(len(s.input_ids) for s in seqs)
    # Rows may hold the examples in another order (first-fit decreasing); each keeps its targets.
    want = sorted(tuple(t for t in s.targets if t != IGNORE) for s in seqs)
    got = [t for s in packed for t in s.targets if t != IGNORE]
    assert sum(len(w) for w in want) == len(got)
    assert all(any(tuple(got[i : i + len(w)]) == w for i in range(len(got))) for w in want)


def test_collator_aligns_topk_rows_with_the_predicting_logit(tmp_path: Path) -> None:
    tok = char_tokenizer()
    rows = [
        {
            "messages": MSG,
            "token_ids": [20, 21],
            "topk_ids": [[20, 5], [21, 6]],
            "topk_logprobs": [[-0.1, -3], [-0.2, None]],
        },
        {"messages": MSG, "token_ids": [22], "topk_ids": [[22]], "topk_logprobs": [[-0.3]]},
    ]
    seqs, _ = build_sequences(_records(tmp_path, rows, "kd"), tok, "kd", 100, False)
    batch = Collator(tok.pad_token_id, with_topk=True)(seqs)
    p = len(prompt_ids(tok, MSG))
    assert batch["kd_mask"][0].nonzero().squeeze(1).tolist() == [p - 1, p]
    assert batch["topk_ids"][0, p - 1].tolist() == [20, 5]
    assert batch["topk_logprobs"][0, p, 1].item() == float("-inf")
    assert batch["labels"][0, p - 1].item() == 20 and batch["labels"][1, p - 1].item() == 22
    assert batch["attention_mask"][1].sum().item() == p + 1
    assert json.dumps(batch["input_ids"].shape[1]) == str(p + 2)


def test_packing_fills_rows_where_in_order_packing_would_leave_gaps() -> None:
    # In order: [40], [30, 24], [20] = 3 rows; first-fit decreasing: [40, 24], [30, 20] = 2 rows.
    seqs = [Sequence(list(range(n)), [IGNORE] * n) for n in (40, 30, 24, 20)]
    packed = pack(seqs, 64)
    assert sorted(len(s.input_ids) for s in packed) == [50, 64]
