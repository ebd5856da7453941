"""Does distillation make better students? Sorting letters, exact match, through the engine's path.

Task (workers/engine/tasks_synthetic.py): six distinct letters from a-o, then ">"; the answer is
the letters in order ("kdbhaf>" -> "abdfhk"). A teacher trained on it with plain cross-entropy
ranks the letters it has not written yet by their order, so its distribution says more than the
one-hot target does (the second most likely letter is the next one in order, and so on).

Path, as far as the product has one without the web apps:
  1. the teacher (a tiny Llama, BOS written by its chat template as Llama's is) is trained by
     ``workers.engine.train`` on ground truth;
  2. it answers the students' prompts through ``workers.engine.generate_local`` (the code
     generation jobs run for local teachers), greedy, with ``top_logprobs`` = K; each answer's DTK1
     record (``LocalResult.topk_blob``) is appended to a ``topk.bin`` shard and the rows are written
     as a dataset version writes them (``train.jsonl`` for sft, ``train_kd.jsonl`` with
     ``topk_ref`` for kd; distillapp/datasets/writer.py);
  3. every student is trained by ``workers.engine.train`` from those files, equal data and steps;
  4. students answer the held-out prompts through ``generate_local`` and are scored with
     ``workers.engine.evaluation.reference.exact_match``.
Students: (a) scratch on ground truth; (b) sft on the teacher's answers; (c) kd with the full
distribution (K = V = 20, which is also the engine's largest K, so "top-20" is this row); (d) kd
with top-5; kd rows at the engine's default T = 2 and, as ``name@T``, at T = 4 and 8. KD uses
alpha = 1 (KL only). Five seeds (student initialisation and data order); the teacher and the data
are the same for all seeds, so the seeds pair up: paired t-test and one-sided Wilcoxon signed-rank
over seeds. README "Distillation quality" and docs/engine.md have the results.

Run: .venv/bin/python bench/distill_quality.py  [--quick] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEACHER = {"hidden": 96, "layers": 3, "heads": 4, "intermediate": 384}
STUDENT = {"hidden": 48, "layers": 2, "heads": 2, "intermediate": 96}
COMMON: dict[str, Any] = {
    "lora": False,  # random students: LoRA on a random base has nothing to adapt
    "save_steps": 10**6,
    "logging_steps": 100,
    "max_length": 40,
    "save_total_limit": 1,
    "warmup_steps": 0.05,
    "lr_scheduler": "cosine",
}
LABELS = {
    "scratch": "(a) scratch, ground truth",
    "sft": "(b) sft on teacher answers",
    "kd_full": "(c) kd, full distribution (K=V=20)",
    "kd_top5": "(d) kd, top-5",
    "kd_top2": "(e) kd, top-2",
}


def _threads() -> None:
    import torch

    # One thread per process: on a shared 2-core box two processes beat two threads.
    torch.set_num_threads(1)


def n_params(model_dir: str) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def answers(model_dir: str, prompts: list[str], task: Any, top_logprobs: int = 0) -> list[Any]:
    """Greedy answers through the local-teacher generation code."""
    from workers.engine import generate_local as gl

    lm = gl.load(model_dir, device="cpu", dtype="float32")
    settings = gl.LocalSettings(max_new_tokens=task.length + 1, top_logprobs=top_logprobs)
    requests = [gl.LocalRequest(i, task.messages(p)) for i, p in enumerate(prompts)]
    return gl.generate_all(lm, requests, settings, batch_size=500)


def exact(model_dir: str, prompts: list[str], task: Any) -> float:
    from workers.engine.evaluation.reference import exact_match

    outs = answers(model_dir, prompts, task)
    hits = [exact_match(o.text, task.answer(p)) for o, p in zip(outs, prompts, strict=True)]
    return sum(hits) / len(hits)


def write_version(folder: Path, task: Any, prompts: list[str], outs: list[Any]) -> None:
    """train.jsonl (sft) and train_kd.jsonl + topk.bin (kd), as a dataset version writes them."""
    from workers.engine import topk_format

    folder.mkdir(parents=True)
    with (
        open(folder / "train.jsonl", "w") as sft,
        open(folder / "train_kd.jsonl", "w") as kd,
        open(folder / "topk.bin", "wb") as shard,
    ):
        for p, o in zip(prompts, outs, strict=True):
            line = {"completion": o.text, "messages": task.messages(p)}
            sft.write(json.dumps(line, sort_keys=True) + "\n")
            blob, _ = o.topk_blob()
            offset, length = topk_format.append_to_shard(shard, blob)
            ref = {"length": length, "offset": offset, "path": "topk.bin"}
            kd.write(json.dumps({**line, "topk_ref": ref}, sort_keys=True) + "\n")


def run_student(job: dict[str, Any]) -> tuple[str, int, float, float]:
    _threads()
    from workers.engine.config import TrainConfig
    from workers.engine.tasks_synthetic import SortTask
    from workers.engine.train import train

    task = SortTask(**job["task"])
    started = time.perf_counter()
    method = "kd" if job["name"].startswith("kd") else "sft"
    temperature = float(job["name"].split("@")[1]) if "@" in job["name"] else job["temperature"]
    train(
        TrainConfig(
            data=job["data"],
            base=job["base"],
            out=job["out"],
            method=method,
            learning_rate=job["lr"],
            batch_size=32,
            max_steps=job["steps"],
            seed=job["seed"],
            teacher_tokenizer=job["teacher"] if method == "kd" else None,
            temperature=temperature,
            alpha=1.0,
            **COMMON,
        )
    )
    acc = exact(job["out"], job["held"], task)
    return job["name"], job["seed"], acc, time.perf_counter() - started


def label(name: str) -> str:
    base, _, temp = name.partition("@")
    return LABELS[base] + (f", T={temp}" if temp else "")


def paired(kd: list[float], sft: list[float]) -> str:
    from scipy import stats

    if len(kd) < 2:
        return "n/a (one seed)"
    diff = [a - b for a, b in zip(kd, sft, strict=True)]
    t = stats.ttest_rel(kd, sft)
    try:
        w = stats.wilcoxon(kd, sft, alternative="greater").pvalue
    except ValueError:
        w = float("nan")
    return (
        f"mean diff {statistics.mean(diff):+.3f} (per seed {', '.join(f'{d:+.3f}' for d in diff)}); "
        f"paired t-test p = {t.pvalue:.4f} (two-sided); Wilcoxon one-sided p = {w:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny counts, to smoke-test the script")
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--repeats", action="store_true", help="letters may repeat")
    ap.add_argument("--teacher-steps", type=int, default=500)
    ap.add_argument("--student-steps", type=int, default=300)
    ap.add_argument("--student-prompts", type=int, default=100)
    ap.add_argument("--student-lr", type=float, default=5e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--students", default="scratch,sft,kd_full,kd_top5,kd_full@4,kd_top5@4,kd_top5@8"
    )
    args = ap.parse_args()
    if args.quick:
        args.teacher_steps, args.student_steps, args.seeds = 30, 10, 2
    _threads()
    from workers.engine.tasks_synthetic import SORT_CHARS, SortTask
    from workers.engine.toy import BOS_CHAT_TEMPLATE, char_tokenizer, tiny_llama
    from workers.engine.train import train

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    task = SortTask(length=args.length, repeats=args.repeats)
    tok = char_tokenizer(SORT_CHARS, chat_template=BOS_CHAT_TEMPLATE)
    vocab = len(tok)
    pool, held = task.split(train=4500, held_out=args.held_out)

    def make_base(name: str, seed: int, size: dict[str, int]) -> str:
        path = work / name
        tiny_llama(vocab, seed=seed, max_positions=48, **size).save_pretrained(path)
        tok.save_pretrained(path)
        return str(path)

    # 1. Teacher on ground truth over the whole pool.
    from workers.engine.config import TrainConfig

    t0 = time.perf_counter()
    gt = work / "teacher_gt.jsonl"
    gt.write_text(
        "".join(
            json.dumps({"messages": task.messages(p), "completion": task.answer(p)}) + "\n"
            for p in pool
        )
    )
    teacher = str(work / "teacher")
    train(
        TrainConfig(
            data=str(gt),
            base=make_base("teacher_base", 1234, TEACHER),
            out=teacher,
            learning_rate=3e-3,
            batch_size=64,
            max_steps=args.teacher_steps,
            seed=1,
            **COMMON,
        )
    )
    teacher_acc = exact(teacher, held, task)
    teacher_params = n_params(teacher)
    print(
        f"teacher: {teacher_params:,} params, held-out exact match {teacher_acc:.3f} "
        f"({args.teacher_steps} steps, {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )

    # 2. The teacher answers the students' prompts like a generation job, once per K.
    prompts = pool[: args.student_prompts]
    data: dict[str, str] = {}
    gt_path = work / "gt.jsonl"
    gt_path.write_text(
        "".join(
            json.dumps({"messages": task.messages(p), "completion": task.answer(p)}) + "\n"
            for p in prompts
        )
    )
    data["scratch"] = str(gt_path)
    stats_line = ""
    for name, k in (("kd_full", vocab), ("kd_top5", 5), ("kd_top2", 2)):
        outs = answers(teacher, prompts, task, top_logprobs=k)
        write_version(work / f"version_{name}", task, prompts, outs)
        data[name] = str(work / f"version_{name}" / "train_kd.jsonl")
        if name == "kd_full":
            data["sft"] = str(work / f"version_{name}" / "train.jsonl")
            import numpy as np

            top1 = np.concatenate([np.exp(o.topk_logprobs[:, 0].astype(float)) for o in outs])
            hit = sum(o.text == task.answer(p) for o, p in zip(outs, prompts, strict=True))
            stats_line = (
                f"teacher on the students' prompts: exact match {hit / len(prompts):.3f}; "
                f"mean top-1 probability {top1.mean():.3f}, median {np.median(top1):.4f}"
            )
    print(stats_line, flush=True)

    # 3-4. Students: same prompts, steps, batch and learning rate; seeds pair up.
    names = [n for n in args.students.split(",") if n]
    jobs = []
    for seed in range(args.seeds):
        base = make_base(f"student_base_{seed}", seed, STUDENT)
        for name in names:
            jobs.append(
                {
                    "name": name,
                    "seed": seed,
                    "data": data[name.split("@")[0]],
                    "base": base,
                    "out": str(work / f"{name}_{seed}"),
                    "teacher": teacher,
                    "lr": args.student_lr,
                    "steps": args.student_steps,
                    "temperature": args.temperature,
                    "held": held,
                    "task": {"length": args.length, "repeats": args.repeats},
                }
            )
    student_params = n_params(str(work / "student_base_0"))
    results: dict[str, dict[int, float]] = {n: {} for n in names}
    times: dict[str, float] = dict.fromkeys(names, 0.0)
    with ProcessPoolExecutor(max_workers=args.workers) as pool_exec:
        for name, seed, acc, secs in pool_exec.map(run_student, jobs):
            results[name][seed] = acc
            times[name] += secs
            print(f"  seed {seed} {name:8s} exact match {acc:.3f} ({secs:.0f}s)", flush=True)

    wall = time.perf_counter() - started
    print()
    print(
        f"sorting {args.length} of 15 letters; teacher {teacher_params:,} params, students "
        f"{student_params:,} ({student_params / teacher_params:.3f}x); {args.student_steps} steps "
        f"x batch 32 on {len(prompts)} prompts, lr {args.student_lr}; kd alpha 1, "
        f"T {args.temperature}; held-out {len(held)} problems"
    )
    print(stats_line)
    print(f"| model | held-out exact match, mean ± sd over {args.seeds} seeds | per seed | "
          "share of teacher | time/run |")  # fmt: skip
    print("|---|---|---|---|---|")
    print(f"| teacher | {teacher_acc:.3f} | - | 1.00 | - |")
    for name in names:
        accs = [results[name][s] for s in range(args.seeds)]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        mean = statistics.mean(accs)
        share = mean / teacher_acc if teacher_acc else float("nan")
        print(
            f"| {label(name)} | {mean:.3f} ± {sd:.3f} | {', '.join(f'{a:.3f}' for a in accs)} | "
            f"{share:.2f} | {times[name] / args.seeds:.0f}s |"
        )
    if "sft" in results:
        sft = [results["sft"][s] for s in range(args.seeds)]
        for name in names:
            if name.startswith("kd") or name == "scratch":
                other = [results[name][s] for s in range(args.seeds)]
                print(f"{name} vs sft: {paired(other, sft)}")
    print(f"\nwall time {wall:.0f}s ({wall / 60:.1f} min); work dir {work}")


if __name__ == "__main__":
    main()
