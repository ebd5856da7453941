"""Confirm one KD setting on fresh draws of the problems, pooling the paired seeds.

`bench/distill_quality.py` ranks students on one draw of the problems (the teacher's pool, the
students' prompts and the held-out set; `--data-seed`). With five seeds, seed-to-seed spread of
0.01-0.03 and gaps of a few points, one draw decides a setting's verdict (docs/engine.md). So a
setting chosen on draw 0 is confirmed here on draws it was not chosen on: each draw is a full
run of distill_quality.py through the product (its own teacher, jobs, dataset versions, training
and eval runs; `--students sft,<kd>`), in a child process, and the (draw, seed) pairs are then
pooled: paired t-test (two-sided) and one-sided Wilcoxon over every pair, beside each draw's own.
The share of the teacher is the mean KD exact match over the mean teacher exact match.

    .venv/bin/python bench/distill_confirm.py [--kd kd_top5@3] [--draws 1,2,3,4] [--seeds 5]

Extra arguments after `--` go to every distill_quality.py run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_draw(draw: int, kd: str, seeds: int, extra: list[str], out: Path) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "distill_quality.py"),
        "--data-seed", str(draw),
        "--students", f"sft,{kd}",
        "--seeds", str(seeds),
        "--results", str(out),
        *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"draw {draw} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    table = [line for line in proc.stdout.splitlines() if line.startswith(("|", f"{kd} vs"))]
    print(f"draw {draw} ({time.perf_counter() - t0:.0f}s):", *table, sep="\n", flush=True)
    return json.loads(out.read_text())


def pooled(kd: list[float], sft: list[float]) -> str:
    from scipy import stats

    diff = [a - b for a, b in zip(kd, sft, strict=True)]
    t = stats.ttest_rel(kd, sft)
    w = stats.wilcoxon(kd, sft, alternative="greater").pvalue
    return (
        f"{len(diff)} pairs, mean diff {statistics.mean(diff):+.4f} "
        f"(sd {statistics.stdev(diff):.4f}, {sum(d > 0 for d in diff)} above, "
        f"{sum(d < 0 for d in diff)} below); paired t-test p = {t.pvalue:.4f} (two-sided); "
        f"Wilcoxon one-sided p = {w:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kd", default="kd_top5@3", help="the KD student, as distill_quality names it")
    ap.add_argument("--draws", default="1,2,3,4")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("extra", nargs="*", help="after --: arguments for distill_quality.py")
    args = ap.parse_args()
    draws = [int(d) for d in args.draws.split(",") if d]
    work = Path(tempfile.mkdtemp(prefix="distill_confirm_"))
    started = time.perf_counter()
    rows = []
    for draw in draws:
        result = run_draw(draw, args.kd, args.seeds, args.extra, work / f"draw{draw}.json")
        for seed in range(args.seeds):
            rows.append(
                (
                    draw,
                    seed,
                    result["teacher"],
                    result["students"]["sft"][str(seed)],
                    result["students"][args.kd][str(seed)],
                )
            )
    teacher = statistics.mean(r[2] for r in rows)
    sft = [r[3] for r in rows]
    kd = [r[4] for r in rows]
    print()
    print(f"{args.kd} against sft on draws {args.draws}, {args.seeds} seeds each (pooled):")
    print("| draw | teacher | sft, mean over seeds | kd, mean over seeds | kd share of teacher |")
    print("|---|---|---|---|---|")
    for draw in draws:
        mine = [r for r in rows if r[0] == draw]
        t, s, k = (statistics.mean(r[i] for r in mine) for i in (2, 3, 4))
        print(f"| {draw} | {t:.3f} | {s:.3f} | {k:.3f} | {k / t:.3f} |")
    print(
        f"| all | {teacher:.3f} | {statistics.mean(sft):.3f} ± {statistics.stdev(sft):.3f} | "
        f"{statistics.mean(kd):.3f} ± {statistics.stdev(kd):.3f} | "
        f"{statistics.mean(kd) / teacher:.3f} |"
    )
    print(f"{args.kd} vs sft, pooled: {pooled(kd, sft)}")
    wall = time.perf_counter() - started
    print(f"wall time {wall:.0f}s ({wall / 60:.1f} min); results under {work}")


if __name__ == "__main__":
    main()
