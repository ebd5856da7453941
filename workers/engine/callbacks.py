"""Trainer callbacks: progress rows (callback hook + metrics.jsonl) and cooperative cancel."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

ProgressFn = Callable[[dict[str, Any]], None]


class TokenMeter:
    """Non-padding tokens this process has trained on; the trainer adds to it every micro-batch."""

    def __init__(self) -> None:
        self.tokens = 0


def trim_metrics(path: str, last_step: int) -> None:
    """Drop rows past the checkpoint we resume from, so the curve carries on without duplicates.

    A killed process may have logged steps after its last checkpoint; those steps are redone.
    """
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        rows = [line for line in fh if line.strip()]
    kept = []
    for line in rows:
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a half-written last line from the kill
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(kept)
    os.replace(tmp, path)


class ProgressCallback(TrainerCallback):
    def __init__(self, metrics_path: str, meter: TokenMeter, progress: ProgressFn | None) -> None:
        self.metrics_path = metrics_path
        self.meter = meter
        self.progress = progress
        self._t0 = 0.0
        self._step0 = 0
        self._last_t = 0.0
        self._last_tokens = 0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self._t0 = self._last_t = time.perf_counter()
        self._step0 = state.global_step
        self._last_tokens = self.meter.tokens

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not logs or not state.is_world_process_zero:
            return
        if "loss" not in logs and "eval_loss" not in logs:
            return  # the end-of-training summary row; summary.json carries it
        now = time.perf_counter()
        elapsed = now - self._last_t
        tokens = self.meter.tokens - self._last_tokens
        done = state.global_step - self._step0
        per_step = (now - self._t0) / done if done > 0 else None
        row = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "loss": logs.get("loss"),
            "eval_loss": logs.get("eval_loss"),
            "learning_rate": logs.get("learning_rate"),
            "grad_norm": logs.get("grad_norm"),
            "tokens_per_s": round(tokens / elapsed, 1) if "loss" in logs and elapsed > 0 else None,
            "eta_s": round(per_step * (state.max_steps - state.global_step), 1)
            if per_step is not None
            else None,
            "epoch": round(state.epoch, 4) if state.epoch is not None else None,
        }
        if "loss" in logs:
            self._last_t, self._last_tokens = now, self.meter.tokens
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.progress is not None:
            self.progress(row)


class CancelCallback(TrainerCallback):
    """Polls ``should_cancel`` after every optimizer step; on True, checkpoints and stops."""

    def __init__(self, should_cancel: Callable[[], bool]) -> None:
        self.should_cancel = should_cancel
        self.cancelled = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.should_cancel():
            self.cancelled = True
            control.should_save = True
            control.should_training_stop = True
