"""Tokens/s of batched local generation (batch 16) against one prompt at a time, same tiny model,
same prompts, same run (target: batched >= 4x). Greedy, top-20 log-probs kept, as a KD job would.

    .venv/bin/python bench/local_teacher.py [--prompts 64] [--new-tokens 32] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.generation.tiny_model import WORDS, build_tiny_model  # noqa: E402
from workers.engine import generate_local as gl  # noqa: E402


def _prompts(n: int) -> list[gl.LocalRequest]:
    out = []
    for i in range(n):
        words = [
            WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5 + (i * 5) % 23)
        ]  # 5..27 words
        out.append(gl.LocalRequest(i, [{"role": "user", "content": " ".join(words)}]))
    return out


def measure(
    lm: gl.LocalModel, requests: list[gl.LocalRequest], settings: gl.LocalSettings, batch_size: int
) -> tuple[float, int]:
    gl.generate_batch(lm, requests[:batch_size], settings)  # warm-up
    tokens = 0

    def count(batch: list[gl.LocalResult]) -> None:
        nonlocal tokens
        tokens += sum(r.completion_tokens for r in batch)

    started = time.perf_counter()
    gl.generate_all(lm, requests, settings, batch_size=batch_size, on_batch=count)
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    # One CPU thread: on a shared 2-core box, torch's thread pool contends and is 30x slower.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        build_tiny_model(folder, hidden=args.hidden, layers=args.layers)
        lm = gl.load(folder, device=args.device, dtype="float32")
        params = sum(p.numel() for p in lm.model.parameters())
        settings = gl.LocalSettings(max_new_tokens=args.new_tokens, top_logprobs=20)
        requests = _prompts(args.prompts)
        print(
            f"tiny Llama: {params / 1e6:.2f} M parameters, device {lm.device}, {args.prompts} prompts, "
            f"{args.new_tokens} new tokens each, greedy, top-20 log-probs, {args.threads} CPU thread(s)"
        )
        t1, n1 = measure(lm, requests, settings, 1)
        tb, nb = measure(lm, requests, settings, args.batch)
    single, batched = n1 / t1, nb / tb
    print(f"one prompt at a time: {n1} tokens in {t1:.2f} s = {single:.0f} tokens/s")
    print(f"batch {args.batch}:            {nb} tokens in {tb:.2f} s = {batched:.0f} tokens/s")
    print(f"speed-up: {batched / single:.1f}x (target >= 4x)")


if __name__ == "__main__":
    main()
