"""Local models for eval runs: load a base model, a merged or quantised student, or a base model
with a LoRA adapter on top (peft), and answer prompts through `generate_local` (the same chat
template, padding and decoding as generation jobs), measuring speed at batch 1 and batched.

The first `batch1_count` prompts are answered one at a time: their latency is what one user
waits, and their tokens/s is batch-1 throughput. The rest go in batches of `batch_size`: their
tokens/s (over each batch's wall time) is batched throughput. torch/peft are imported inside
functions; no Django here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from workers.engine import generate_local as gl


@dataclass
class EvalLocalResult:
    key: Any
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int  # batch 1: the request's own time; batched: the batch's time / its size
    batch_size: int
    batch_ms: int


def load_model(
    path: str, *, adapter: str = "", device: str = "auto", dtype: str = "auto"
) -> gl.LocalModel:
    """The model at `path`; with `adapter`, that LoRA adapter applied over it (not merged, so
    what is measured is the adapter as it would be served)."""
    lm = gl.load(path, device=device, dtype=dtype)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(lm.model, adapter)
        model.eval()
        lm = gl.LocalModel(model=model, tokenizer=lm.tokenizer, device=lm.device, path=path)
    return lm


def answer_all(
    lm: gl.LocalModel,
    requests: Iterable[gl.LocalRequest],
    settings: gl.LocalSettings,
    *,
    batch_size: int = 16,
    batch1_count: int = 8,
    on_batch: Callable[[list[EvalLocalResult]], None],
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Answer every request; `on_batch` gets each batch's results. Returns False when
    `should_stop` said stop (asked before every batch)."""
    pending = list(requests)
    single, rest = pending[:batch1_count], pending[batch1_count:]
    batches = [[r] for r in single] + list(gl.batched(rest, max(1, batch_size)))
    for i, batch in enumerate(batches):
        if should_stop is not None and should_stop():
            return False
        seed = None if settings.seed is None else int(settings.seed) + i
        started = time.perf_counter()
        results = gl.generate_batch(lm, batch, settings, seed=seed)
        wall_ms = int((time.perf_counter() - started) * 1000)
        on_batch(
            [
                EvalLocalResult(
                    key=r.key,
                    text=r.text,
                    finish_reason=r.finish_reason,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    latency_ms=wall_ms // len(batch) if len(batch) > 1 else wall_ms,
                    batch_size=len(batch),
                    batch_ms=wall_ms,
                )
                for r in results
            ]
        )
    return True
