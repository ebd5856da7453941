from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workers.engine.config import TrainConfig
from workers.engine.data import DataValidationError
from workers.engine.train import RunStateError, train
from workers.engine.vocab import VocabMismatchError

PROGRESS_KEYS = {
    "step",
    "total_steps",
    "loss",
    "eval_loss",
    "learning_rate",
    "grad_norm",
    "tokens_per_s",
    "eta_s",
    "epoch",
}


def _config(base: Path, data: Path, out: Path, **kw: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "batch_size": 4,
        "max_steps": 12,
        "save_steps": 4,
        "logging_steps": 2,
        "learning_rate": 5e-3,
        "max_length": 64,
        "lora_r": 4,
        "lora_alpha": 8,
    }
    settings.update(kw)
    return TrainConfig(data=str(data), base=str(base), out=str(out), **settings)


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_run_writes_adapter_lineage_metrics_and_reports_progress(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = []
    data = sft_data()
    out = tmp_path / "out"
    result = train(
        _config(base_dir, data, out, eval_data=str(data), eval_steps=6), progress=rows.append
    )
    assert result.status == "completed" and result.global_step == 12 == result.total_steps
    assert result.tokens_seen > 0 and result.eval_loss is not None
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "run.json",
        "summary.json",
    ):
        assert (out / name).exists(), name
    run = json.loads((out / "run.json").read_text())
    assert len(run["data_sha256"]) == 64 and run["settings"]["method"] == "sft"
    assert run["base_model"] == str(base_dir.resolve())
    assert rows and all(set(r) == PROGRESS_KEYS for r in rows)
    train_rows = [r for r in rows if r["loss"] is not None]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    assert all(r["tokens_per_s"] > 0 and r["total_steps"] == 12 for r in train_rows)
    assert [r["step"] for r in rows if r["eval_loss"] is not None] == [6, 12]
    assert _metrics(out) == rows
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]


def test_kd_run_uses_inline_and_shard_topk(
    base_dir: Path, teacher_dir: Path, kd_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "kd"
    cfg = _config(
        base_dir, kd_data(k=5), out, method="kd", teacher_tokenizer=str(teacher_dir), max_steps=6
    )
    result = train(cfg)
    assert result.status == "completed" and result.train_loss is not None
    assert result.train_loss == result.train_loss  # not NaN
    assert (out / "adapter_model.safetensors").exists()


def test_kd_refused_when_the_teacher_vocabulary_differs(
    base_dir: Path, teacher_dir: Path, kd_data: Callable[..., Path], tmp_path: Path
) -> None:
    from workers.engine.toy import DEFAULT_CHARS, char_tokenizer

    other = tmp_path / "other_tok"
    char_tokenizer(DEFAULT_CHARS[::-1]).save_pretrained(other)  # same tokens, other ids
    cfg = _config(base_dir, kd_data(), tmp_path / "out", method="kd", teacher_tokenizer=str(other))
    with pytest.raises(VocabMismatchError, match="use method 'sft' instead"):
        train(cfg)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_kd_refused_when_special_tokens_differ(
    base_dir: Path, kd_data: Callable[..., Path], tmp_path: Path
) -> None:
    from workers.engine.toy import char_tokenizer

    other = tmp_path / "other_tok"
    tok = char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.save_pretrained(other)
    cfg = _config(base_dir, kd_data(), tmp_path / "out", method="kd", teacher_tokenizer=str(other))
    with pytest.raises(VocabMismatchError, match="<|im_end|>"):
        train(cfg)


def test_bad_data_stops_before_training(base_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(DataValidationError):
        train(_config(base_dir, data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_truncation_is_in_the_result_and_run_json(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = train(_config(base_dir, sft_data(), out, max_length=40, max_steps=2))
    assert result.truncation["truncated"] > 0
    assert (
        json.loads((out / "run.json").read_text())["truncation"]["truncated"]
        == result.truncation["truncated"]
    )


def test_cancel_checkpoints_and_resume_finishes_the_run(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    data = sft_data()
    polls: list[int] = []

    def should_cancel() -> bool:
        polls.append(1)
        return len(polls) >= 5

    first = train(_config(base_dir, data, out), should_cancel=should_cancel)
    assert first.status == "cancelled" and first.global_step == 5
    assert first.checkpoint and Path(first.checkpoint).is_dir()
    assert not (out / "adapter_model.safetensors").exists()
    with pytest.raises(RunStateError):
        train(_config(base_dir, data, out))  # will not overwrite a run without resume
    second = train(_config(base_dir, data, out, resume=True))
    assert second.status == "completed" and second.global_step == 12
    steps = [r["step"] for r in _metrics(out) if r["loss"] is not None]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_resume_refuses_changed_data(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    data = sft_data()
    train(_config(base_dir, data, out, max_steps=4))
    data.write_text(data.read_text() + data.read_text())
    with pytest.raises(RunStateError, match="data file changed"):
        train(_config(base_dir, data, out, max_steps=8, resume=True))


def test_packing_trains_on_fewer_rows(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = train(_config(base_dir, sft_data(), out, packing=True, max_length=128, max_steps=3))
    run = json.loads((out / "run.json").read_text())
    assert result.status == "completed"
    assert run["train_rows"] < run["examples"]


def test_full_finetune_saves_full_weights(
    base_dir: Path, sft_data: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    train(_config(base_dir, sft_data(), out, lora=False, max_steps=2))
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
