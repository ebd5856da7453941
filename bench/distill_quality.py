"""Does distillation work? Two-digit addition with a character tokenizer, exact-match accuracy.

The answer is written least significant digit first ("12+39=" -> "15").
A teacher (~0.45M parameters) is trained on ground truth. Four students about a tenth of its size
then train for the same number of steps on the same prompts:
  (a) scratch: ground-truth answers;  (b) sft: the teacher's greedy answers;
  (c) kd: teacher's token ids + its full distribution (K = V), alpha = 1 (KL only);
  (d) kd with top-5, alpha = 1;  (e) kd full with alpha = 0.5 (half the loss is CE on the teacher's
  tokens, the engine's default), kept to show what the mix costs here.
Students are randomly initialised and fully fine-tuned (lora=False): LoRA on a random base has
nothing to adapt. Every run goes through workers.engine.train, the same code as the app.

Run: .venv/bin/python bench/distill_quality.py  [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from workers.engine.config import TrainConfig  # noqa: E402
from workers.engine.quickgen import generate  # noqa: E402
from workers.engine.toy import char_tokenizer, tiny_llama  # noqa: E402
from workers.engine.train import train  # noqa: E402

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
TEACHER = {"hidden": 96, "layers": 3, "heads": 4, "intermediate": 384}
STUDENT = {"hidden": 48, "layers": 2, "heads": 2, "intermediate": 96}


def problems(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    pairs = [(a, b) for a in range(100) for b in range(100)]
    random.Random(seed).shuffle(pairs)
    return pairs[500:], pairs[:500]  # train pool, held-out


def answer(a: int, b: int) -> str:
    # Least significant digit first: each digit then needs only its column and the carry, which a
    # model this small learns in minutes on a CPU (written most significant first it does not).
    return str(a + b)[::-1]


def msgs(a: int, b: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{a}+{b}="}]


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def accuracy(model_dir: str, tok, held: list[tuple[int, int]]) -> float:  # type: ignore[no-untyped-def]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    outs = generate(model, tok, [msgs(a, b) for a, b in held], max_new_tokens=5, batch_size=250)
    return sum(o.text == answer(a, b) for o, (a, b) in zip(outs, held, strict=True)) / len(held)


def n_params(model_dir: str) -> int:
    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="tiny step counts, to smoke-test the script"
    )
    ap.add_argument("--teacher-steps", type=int, default=1000)
    ap.add_argument("--student-steps", type=int, default=800)
    ap.add_argument("--student-prompts", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.teacher_steps, args.student_steps, args.seeds = 20, 10, 1
    # One thread: on a shared 2-core box, two threads per tiny model mostly wait on each other.
    torch.set_num_threads(1)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    tok = char_tokenizer("0123456789+=", chat_template=TEMPLATE)
    vocab = len(tok)
    pool, held = problems(0)
    base_common = {"lora": False, "save_steps": 10**6, "logging_steps": 100, "max_length": 16,
                   "save_total_limit": 1, "warmup_steps": 0.05, "lr_scheduler": "cosine"}  # fmt: skip

    def make_base(name: str, seed: int, **size: int) -> str:
        path = work / name
        tiny_llama(vocab, seed=seed, max_positions=32, **size).save_pretrained(path)
        tok.save_pretrained(path)
        return str(path)

    # Teacher: ground truth on the whole training pool.
    t0 = time.perf_counter()
    gt_all = write(
        work / "teacher.jsonl",
        [{"messages": msgs(a, b), "completion": answer(a, b)} for a, b in pool],
    )
    teacher_base = make_base("teacher_base", 1234, **TEACHER)
    train(TrainConfig(data=gt_all, base=teacher_base, out=str(work / "teacher"), learning_rate=3e-3,
                      batch_size=64, max_steps=args.teacher_steps, seed=1, **base_common))  # fmt: skip
    teacher_dir = str(work / "teacher")
    teacher_acc = accuracy(teacher_dir, tok, held)
    teacher_time = time.perf_counter() - t0
    print(f"teacher: {n_params(teacher_dir):,} params, held-out exact match {teacher_acc:.3f} "
          f"({args.teacher_steps} steps, {teacher_time:.0f}s)", flush=True)  # fmt: skip

    # The teacher answers the students' prompts once; its top-k (K = V) is stored like a job's.
    prompts = pool[: args.student_prompts]
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    outs = generate(
        teacher, tok, [msgs(a, b) for a, b in prompts], max_new_tokens=5, batch_size=500, topk=vocab
    )
    teacher_train_acc = sum(
        o.text == answer(a, b) for o, (a, b) in zip(outs, prompts, strict=True)
    ) / len(prompts)
    data = {
        "scratch": write(work / "gt.jsonl", [{"messages": msgs(a, b), "completion": answer(a, b)} for a, b in prompts]),
        "sft": write(work / "sft.jsonl", [{"messages": msgs(a, b), "completion": o.text} for o, (a, b) in zip(outs, prompts, strict=True)]),
    }  # fmt: skip
    kd_alpha = {"kd_full": 1.0, "kd_top5": 1.0, "kd_full_a05": 0.5}
    for name, k in (("kd_full", vocab), ("kd_top5", 5)):
        rows = []
        for o, (a, b) in zip(outs, prompts, strict=True):
            assert o.topk_ids is not None and o.topk_logprobs is not None
            lp = o.topk_logprobs[:, :k].astype("float16").astype(float)  # as stored: float16
            rows.append({"messages": msgs(a, b), "token_ids": o.token_ids,
                         "topk_ids": o.topk_ids[:, :k].tolist(), "topk_logprobs": lp.tolist()})  # fmt: skip
        data[name] = write(work / f"{name}.jsonl", rows)
    data["kd_full_a05"] = data["kd_full"]

    results: dict[str, list[float]] = {name: [] for name in data}
    student_params = 0
    times: dict[str, float] = dict.fromkeys(data, 0.0)
    for seed in range(args.seeds):
        student_base = make_base(f"student_base_{seed}", seed, **STUDENT)
        student_params = n_params(student_base)
        for name, path in data.items():
            s0 = time.perf_counter()
            method = "kd" if name.startswith("kd") else "sft"
            out = str(work / f"{name}_{seed}")
            train(TrainConfig(data=path, base=student_base, out=out, method=method, learning_rate=5e-3,
                              batch_size=32, max_steps=args.student_steps, seed=seed,
                              teacher_tokenizer=teacher_dir if method == "kd" else None,
                              temperature=2.0, alpha=kd_alpha.get(name, 0.5), **base_common))  # fmt: skip
            results[name].append(accuracy(out, tok, held))
            times[name] += time.perf_counter() - s0
            print(f"  seed {seed} {name:11s} exact match {results[name][-1]:.3f}", flush=True)

    wall = time.perf_counter() - started
    print()
    print(f"teacher {n_params(teacher_dir):,} params; students {student_params:,} params "
          f"({student_params / n_params(teacher_dir):.2f}x); {args.student_steps} steps x batch 32 on "
          f"{len(prompts)} prompts; teacher exact match on those prompts {teacher_train_acc:.3f}")  # fmt: skip
    print(
        "| model | held-out exact match (mean ± sd over seeds) | per-seed | train+eval time/seed |"
    )
    print("|---|---|---|---|")
    print(f"| teacher | {teacher_acc:.3f} | - | {teacher_time:.0f}s |")
    labels = {"scratch": "(a) scratch, ground truth", "sft": "(b) sft on teacher outputs",
              "kd_full": f"(c) kd, full top-k (K=V={vocab}), alpha 1", "kd_top5": "(d) kd, top-5, alpha 1",
              "kd_full_a05": f"(e) kd, full top-k (K=V={vocab}), alpha 0.5"}  # fmt: skip
    base_mean = statistics.mean(results["scratch"])
    for name, accs in results.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        ratio = statistics.mean(accs) / base_mean if base_mean else float("nan")
        per = ", ".join(f"{a:.3f}" for a in accs)
        print(f"| {labels[name]} | {statistics.mean(accs):.3f} ± {sd:.3f} ({ratio:.2f}x scratch) | {per} | "
              f"{times[name] / args.seeds:.0f}s |")  # fmt: skip
    print(f"\nwall time {wall:.0f}s ({wall / 60:.1f} min); work dir {work}")


if __name__ == "__main__":
    main()
