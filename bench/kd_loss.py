"""Peak memory and time of the chunked kd_loss against a naive dense float32 version, and storage.

Sizes from the issue: B = 2, S = 2,048, V = 32,000, K = 20, float32 logits with gradients. Each
implementation runs forward + backward in its own process so the peak resident set size (ru_maxrss)
belongs to it alone; the figure reported is the peak minus the resident size once the inputs exist.
The gradient of the logits ([B, S, V] float32, 524 MB) is produced by both and counted in both.

Run: .venv/bin/python bench/kd_loss.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

B, S, V, K = 2, 2048, 32_000, 20
MB = 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(impl: str) -> None:
    import torch

    from workers.engine.losses import kd_loss, kd_loss_reference

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, S, V, generator=g).requires_grad_()
    topk_ids = torch.randint(0, V, (B, S, K), generator=g)
    # A peaked teacher: top-20 holding ~90% of the mass, sorted like a real top-k.
    raw = torch.randn(B, S, K, generator=g).sort(-1, descending=True).values * 2
    topk_lp = (torch.log_softmax(raw, -1) + torch.log(torch.tensor(0.9))).half()
    mask = torch.ones(B, S, dtype=torch.bool)
    fn = kd_loss if impl == "chunked" else kd_loss_reference
    before = _rss_bytes()
    t0 = time.perf_counter()
    loss = fn(logits, topk_ids, topk_lp, mask, 2.0)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert logits.grad is not None
    print(json.dumps({"impl": impl, "peak_extra_mb": (peak - before) / MB, "seconds": seconds,
                      "loss": loss.item(), "grad_sum": logits.grad.abs().sum().item()}))  # fmt: skip


def run_child(impl: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", impl], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def storage() -> tuple[float, float]:
    import numpy as np

    from workers.engine import topk_format

    rng = np.random.default_rng(0)
    t = 2048
    ids = rng.integers(0, V, size=(t, K))
    raw = np.sort(rng.normal(size=(t, K)) * 2, axis=1)[:, ::-1]
    lp = (raw - np.log(np.exp(raw).sum(1, keepdims=True)) + np.log(0.9)).astype(np.float16)
    blob = topk_format.encode(topk_format.TopkRecord(ids[:, 0].copy(), ids, lp))
    return len(blob) / t, V * 2.0


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    naive = run_child("naive")
    chunked = run_child("chunked")
    grad_mb = B * S * V * 4 / MB
    print(f"kd_loss forward+backward, B={B} S={S} V={V:,} K={K}, float32 logits")
    print("| implementation | peak extra memory | of which logits gradient | time | loss |")
    print("|---|---|---|---|---|")
    for r in (naive, chunked):
        print(
            f"| {r['impl']} | {r['peak_extra_mb']:.0f} MB | {grad_mb:.0f} MB | {r['seconds']:.2f}s | {r['loss']:.6f} |"
        )
    ratio = chunked["peak_extra_mb"] / naive["peak_extra_mb"]
    beyond = (chunked["peak_extra_mb"] - grad_mb) / (naive["peak_extra_mb"] - grad_mb)
    print(
        f"chunked/naive peak: {ratio:.1%} (target <= 25%); excluding the gradient both must hold: {beyond:.1%}"
    )
    print(f"chunked/naive time: {chunked['seconds'] / naive['seconds']:.2f}x; "
          f"loss relative difference {abs(chunked['loss'] - naive['loss']) / abs(naive['loss']):.2e}; "
          f"grad |sum| relative difference {abs(chunked['grad_sum'] - naive['grad_sum']) / naive['grad_sum']:.2e}")  # fmt: skip
    per_token, dense = storage()
    print(f"storage per token: top-{K} DTK1 record {per_token:.1f} bytes vs dense float16 row {dense:,.0f} bytes "
          f"= {per_token / dense:.3%} (target <= 1%)")  # fmt: skip


if __name__ == "__main__":
    main()
