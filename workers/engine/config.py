"""Settings and result of a training run: plain data, so a task or a script can build them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    data: str
    base: str  # folder of the student base model (and its tokenizer)
    out: str
    method: str = "sft"  # "sft" or "kd"
    eval_data: str | None = None
    teacher_tokenizer: str | None = None  # folder; required for kd (vocabulary check)
    # LoRA; lora=False trains every weight (tiny randomly initialised students need it).
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    packing: bool = False  # sft only
    group_by_length: bool = True  # batches of similar lengths (less padding); ignored with packing
    strip_reasoning: bool = False  # drop a leading <think>…</think> block from the targets
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the KD term; 1 - alpha goes to cross-entropy
    warmup_steps: float = 0.0  # < 1: fraction of the total steps
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    save_steps: int = 200
    save_total_limit: int | None = 2
    logging_steps: int = 10
    eval_steps: int | None = None  # defaults to save_steps when eval_data is set
    seed: int = 42
    resume: bool = False
    bf16: bool | None = None  # None: on when CUDA supports it
    gradient_checkpointing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        problems = []
        if self.method not in ("sft", "kd"):
            problems.append(f"method must be 'sft' or 'kd', not {self.method!r}")
        if self.packing and self.method == "kd":
            problems.append("packing is supported for sft only")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append("alpha must be within [0, 1]")
        if self.temperature <= 0:
            problems.append("temperature must be positive")
        if self.max_length < 2:
            problems.append("max_length must be at least 2")
        if self.batch_size < 1 or self.grad_accum < 1:
            problems.append("batch_size and grad_accum must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class TrainResult:
    status: str  # "completed" or "cancelled"
    out_dir: str
    global_step: int
    total_steps: int
    train_loss: float | None
    eval_loss: float | None
    runtime_s: float
    tokens_per_s: float
    tokens_seen: int
    truncation: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # where a cancelled run can resume from

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
