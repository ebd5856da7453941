"""Tiny models and data built under tmp_path: no hub downloads, no database."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from workers.engine import topk_format  # noqa: E402
from workers.engine.toy import char_tokenizer, tiny_llama  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAIRS = [
    ("What is 2+3?", "5"),
    ("Say hi.", "hi there"),
    ("Spell cat.", "c a t"),
    ("Name a colour.", "blue"),
    ("Count to three.", "1 2 3"),
    ("Opposite of up?", "down"),
]


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama student with a character tokenizer that has no chat template (fallback path)."""
    path = tmp_path_factory.mktemp("base")
    tok = char_tokenizer()
    tiny_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bigger 'teacher' sharing the student's vocabulary."""
    path = tmp_path_factory.mktemp("teacher")
    tok = char_tokenizer()
    tiny_llama(len(tok), hidden=48, layers=2, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def sft_data(tmp_path: Path) -> Callable[..., Path]:
    def make(repeat: int = 4, name: str = "sft.jsonl") -> Path:
        rows = [{"messages": _messages(p), "completion": c} for p, c in PAIRS] * repeat
        return write_jsonl(tmp_path / name, rows)

    return make


def teacher_topk(teacher_dir: Path, prompt: str, completion: str, k: int) -> topk_format.TopkRecord:
    """The teacher's top-k at each completion token (teacher forcing on the given text)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.engine.examples import prompt_ids

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir)
    p = prompt_ids(tok, _messages(prompt))
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
    lp, ids = torch.log_softmax(logits.float(), -1).topk(k, -1)
    return topk_format.TopkRecord(
        torch.tensor(c).numpy(), ids.numpy(), lp.numpy().astype("float16")
    )


@pytest.fixture
def kd_data(tmp_path: Path, teacher_dir: Path) -> Callable[..., Path]:
    """KD examples: half inline, half through a topk_format shard (as the generation jobs write)."""

    def make(k: int = 5, repeat: int = 3) -> Path:
        shard = tmp_path / "topk.bin"
        rows = []
        with open(shard, "wb") as fh:
            for i, (p, c) in enumerate(PAIRS * repeat):
                rec = teacher_topk(teacher_dir, p, c, k)
                row: dict[str, Any] = {"messages": _messages(p), "completion": c}
                if i % 2:
                    offset, length = topk_format.append_to_shard(fh, topk_format.encode(rec))
                    row["topk_ref"] = {"path": shard.name, "offset": offset, "length": length}
                else:
                    row["token_ids"] = rec.token_ids.tolist()
                    row["topk_ids"] = rec.topk_ids.tolist()
                    row["topk_logprobs"] = rec.topk_logprobs.astype(float).tolist()
                rows.append(row)
        return write_jsonl(tmp_path / "kd.jsonl", rows)

    return make
