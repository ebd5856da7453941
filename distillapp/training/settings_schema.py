"""The training settings people may choose, by their `TrainConfig` name, with defaults and limits.

Defaults come from the engine's `TrainConfig` (a plain dataclass: importing it loads no torch).
Paths (`data`, `base`, `out`, `eval_data`, `teacher_tokenizer`) and `resume` are the runner's to
set, never the user's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from workers.engine.config import TrainConfig

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts")


@dataclass(frozen=True)
class Setting:
    name: str
    kind: type  # bool, int, float, str
    label: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (eval_steps)

    @property
    def widget(self) -> str:
        return "checkbox" if self.kind is bool else "select" if self.choices else "input"


SETTINGS: tuple[Setting, ...] = (
    Setting("lora", bool, "LoRA (off: full fine-tune)"),
    Setting("lora_r", int, "LoRA rank r", 1, 1024),
    Setting("lora_alpha", int, "LoRA alpha", 1, 4096),
    Setting("lora_dropout", float, "LoRA dropout", 0.0, 0.9),
    Setting("target_modules", str, "LoRA target modules (all-linear or a comma list)"),
    Setting("learning_rate", float, "Learning rate", 1e-8, 1.0),
    Setting("lr_scheduler", str, "Scheduler", choices=SCHEDULERS),
    Setting("epochs", float, "Epochs", 0.01, 1000),
    Setting("max_steps", int, "Max steps (-1: use epochs)", -1, 10_000_000),
    Setting("batch_size", int, "Batch size (per process)", 1, 4096),
    Setting("grad_accum", int, "Gradient accumulation", 1, 4096),
    Setting("max_length", int, "Max length (tokens)", 2, 1_048_576),
    Setting("packing", bool, "Packing (sft only)"),
    Setting("group_by_length", bool, "Group batches by length"),
    Setting("strip_reasoning", bool, "Strip <think> reasoning from targets"),
    Setting("temperature", float, "KD temperature", 0.01, 100),
    Setting("alpha", float, "KD weight alpha", 0.0, 1.0),
    Setting("warmup_steps", float, "Warmup (steps, or a fraction < 1)", 0, 10_000_000),
    Setting("weight_decay", float, "Weight decay", 0.0, 10.0),
    Setting("save_steps", int, "Checkpoint every N steps", 1, 10_000_000),
    Setting("logging_steps", int, "Log every N steps", 1, 10_000_000),
    Setting("eval_steps", int, "Evaluate every N steps (empty: as checkpoints)", 1, 10_000_000, (), True),
    Setting("seed", int, "Seed", 0, 2**31 - 1),
    Setting("gradient_checkpointing", bool, "Gradient checkpointing"),
)  # fmt: skip
BY_NAME = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Any]:
    values = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in BY_NAME}
    # The app checkpoints more often than the engine's CLI default: stop and resume lose less.
    values["save_steps"] = 50
    return values


def _coerce(setting: Setting, value: Any) -> Any:
    """The value as the setting's type; ValueError with a sentence when it is not one."""
    if value is None or value == "":
        if setting.optional:
            return None
        raise ValueError("This setting needs a value.")
    if setting.kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "on", "1", "yes"):
            return True
        if str(value).lower() in ("false", "off", "0", "no"):
            return False
        raise ValueError("Enter true or false.")
    if setting.kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("Enter a whole number.")
        try:
            number: Any = (
                int(str(value).strip()) if not isinstance(value, int | float) else int(value)
            )
        except ValueError:
            raise ValueError("Enter a whole number.") from None
    elif setting.kind is float:
        if isinstance(value, bool):
            raise ValueError("Enter a number.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("Enter a number.") from None
        if not math.isfinite(number):
            raise ValueError("Enter a finite number.")
    else:
        text = str(value).strip()
        if setting.choices and text not in setting.choices:
            raise ValueError(f"Choose one of {', '.join(setting.choices)}.")
        if len(text) > 500 or "\x00" in text:
            raise ValueError("At most 500 characters, no NUL.")
        return text
    if (setting.lo is not None and number < setting.lo) or (
        setting.hi is not None and number > setting.hi
    ):
        raise ValueError(f"Enter a value between {setting.lo:g} and {setting.hi:g}.")
    return number


def clean_settings(*, method: str, values: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with `values`; ValidationError naming each bad field."""
    errors: dict[str, list[str]] = {}
    config = defaults()
    for name, value in (values or {}).items():
        setting = BY_NAME.get(name)
        if setting is None:
            errors[name] = [
                f"Unknown setting {name!r}; settings use the engine's TrainConfig names."
            ]
            continue
        try:
            config[name] = _coerce(setting, value)
        except ValueError as exc:
            errors[name] = [str(exc)]
    if not errors:
        modules = config["target_modules"]
        if modules != "all-linear":
            parts = [m.strip() for m in str(modules).split(",") if m.strip()]
            if not parts or not all(p.replace("_", "").replace(".", "").isalnum() for p in parts):
                errors["target_modules"] = ["Enter all-linear or module names separated by commas."]
            config["target_modules"] = ",".join(parts)
        if config["packing"] and method == "kd":
            errors["packing"] = ["Packing works for sft only."]
        if config["max_steps"] == 0:
            errors["max_steps"] = ["Enter -1 (train for the epochs) or a positive number."]
    if errors:
        raise ValidationError(errors)
    return config
