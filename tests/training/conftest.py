"""Training fixtures: tiny models and a built dataset version written straight into MEDIA_ROOT
in the engine's JSONL format (no hub downloads; the models build in well under a second)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.datasets.models import Dataset, DatasetVersion
from distillapp.generation.models import TeacherKind
from distillapp.training.models import BaseModel, BaseModelSource
from tests.factories import TeacherFactory

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PAIRS = [
    ("What is 2+3?", "5"),
    ("Say hi.", "hi there"),
    ("Spell cat.", "c a t"),
    ("Name a colour.", "blue"),
    ("Count to three.", "1 2 3"),
    ("Opposite of up?", "down"),
    ("7 times 1?", "7"),
    ("Say bye.", "bye now"),
]


def build_tiny(path: Path, *, chars: str | None = None, seed: int = 0) -> Path:
    from workers.engine.toy import DEFAULT_CHARS, char_tokenizer, tiny_llama

    tok = char_tokenizer(chars or DEFAULT_CHARS)
    tiny_llama(len(tok), seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny Llama student (character tokenizer); inside pytest's temp root = a model root."""
    pytest.importorskip("transformers")
    return build_tiny(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_other_vocab(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny(tmp_path_factory.mktemp("tiny-other"), chars="zyxwvu0123456789 ", seed=1)


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


def write_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for prompt, completion in rows:
            fh.write(
                json.dumps(
                    {"messages": [{"role": "user", "content": prompt}], "completion": completion}
                )
                + "\n"
            )


def make_version(project, media: Path, *, repeat: int = 4, kd_rows: int = 0) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name=f"d{Dataset.objects.count()}")
    rel = f"datasets/{project.pk}/{dataset.pk}/1"
    folder = media / rel
    folder.mkdir(parents=True)
    train = PAIRS * repeat
    validation = PAIRS[:4]
    write_rows(folder / "train.jsonl", train)
    write_rows(folder / "validation.jsonl", validation)
    (folder / "train_kd.jsonl").write_text("")
    (folder / "validation_kd.jsonl").write_text("")
    rows = train + validation
    return DatasetVersion.objects.create(
        dataset=dataset,
        project=project,
        number=1,
        status=RunStatus.SUCCEEDED,
        path=rel,
        sha256="ab" * 32,
        counts={
            "rows": len(rows),
            "train": len(train),
            "validation": len(validation),
            "kd_rows": kd_rows,
            "prompt_chars": sum(len(p) for p, _ in rows),
            "target_chars": sum(len(c) for _, c in rows),
        },
        lineage={"prompt_sets": [{"name": "tiny", "sha256": "cd" * 32}], "jobs": []},
    )


@pytest.fixture
def version(project, media) -> DatasetVersion:
    return make_version(project, media)


def ready_base_model(project, folder: Path, **inspection) -> BaseModel:
    """A base model whose inspection has succeeded (without running it)."""
    return BaseModel.objects.create(
        project=project,
        name=f"tiny-{BaseModel.objects.count()}",
        source=BaseModelSource.PATH,
        path=str(folder),
        resolved_path=str(folder),
        status=RunStatus.SUCCEEDED,
        inspection={"chars_per_token": 1.0, "architecture": "LlamaForCausalLM", **inspection},
    )


@pytest.fixture
def base_model(project, tiny_base) -> BaseModel:
    return ready_base_model(project, tiny_base)


@pytest.fixture
def local_teacher(project, tiny_base):
    return TeacherFactory(
        project=project, kind=TeacherKind.HF_LOCAL, model_path=str(tiny_base), base_url="", model=""
    )


# Small and quick: 8 steps of 4 examples, a log row and a checkpoint every 2 steps.
FAST = {
    "max_steps": 8,
    "batch_size": 4,
    "logging_steps": 1,
    "save_steps": 2,
    "lora_r": 4,
    "lora_alpha": 8,
    "max_length": 64,
    "learning_rate": 1e-3,
}
