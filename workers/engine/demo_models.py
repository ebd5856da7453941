"""The demo's two tiny models, built locally in well under a minute on a CPU (no downloads).

The task is one a person can check at a glance and the filters can verify exactly: reverse a
short string of lowercase letters (``Reverse: kfzq`` → ``qzfk``). The teacher (a tiny Llama with a
character tokenizer) is trained on the task until it is nearly always right; the student base is a
smaller, randomly initialised Llama with the *same* tokenizer, so logit distillation (kd) passes
the engine's vocabulary check. Both tokenizers carry a chat template that writes the BOS token,
as Llama's and Qwen's do.

Run: ``python -m workers.engine.demo_models OUT_DIR`` (what ``manage.py demo_setup`` does on first
run) writes ``OUT_DIR/demo-teacher`` and ``OUT_DIR/demo-student``; ``--prompts FILE`` writes a
prompt set with references instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Bump when the recipe changes, so demo_setup rebuilds models made by an older one.
RECIPE_VERSION = 2
TEACHER_DIR = "demo-teacher"
STUDENT_DIR = "demo-student"
MARKER = "demo_model.json"
PREFIX = "Reverse: "
ALPHABET = string.ascii_lowercase
MIN_LEN, MAX_LEN = 3, 6
# BOS, then each message's content on its own line; the answer follows the last newline.
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
TEACHER_SIZE = {"hidden": 64, "layers": 2, "heads": 4, "intermediate": 128}
STUDENT_SIZE = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64}
TEACHER_BATCH = 64
TEACHER_LR = 3e-3
TEACHER_MAX_STEPS = 600
TEACHER_MIN_STEPS = 300
TEACHER_CHECK_EVERY = 50
TEACHER_CHECK_SIZE = 200
TEACHER_TARGET = 0.97
MAX_POSITIONS = 64
DEMO_PROMPTS, DEMO_SEED = 2500, 7


def answer(word: str) -> str:
    return word[::-1]


def prompt_text(word: str) -> str:
    return PREFIX + word


def _random_word(rng: random.Random) -> str:
    # Distinct letters: a tiny model learns to reverse them in a few hundred steps.
    return "".join(rng.sample(ALPHABET, rng.randint(MIN_LEN, MAX_LEN)))


def words(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """``n`` different random strings of 3–6 distinct lowercase letters, none in ``exclude``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        w = _random_word(rng)
        if w not in seen and w not in exclude:
            seen.add(w)
            out.append(w)
    return out


def prompt_rows(n: int = DEMO_PROMPTS, seed: int = DEMO_SEED) -> list[dict[str, Any]]:
    """The demo prompt set: one JSON object per prompt, with its reference (exact match)."""
    return [
        {
            "id": f"reverse-{i:03d}",
            "prompt": prompt_text(w),
            "reference": answer(w),
            "reference_mode": "exact",
            "task": "reverse",
        }
        for i, w in enumerate(words(n, seed), start=1)
    ]


def tokenizer() -> Any:
    from workers.engine.toy import char_tokenizer

    return char_tokenizer(chat_template=CHAT_TEMPLATE)


def _messages(word: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt_text(word)}]


def _is_built(folder: Path) -> bool:
    try:
        meta = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("recipe") == RECIPE_VERSION and (folder / "config.json").exists())


def _publish(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place, so a half-built model is never seen at ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _encode(tok: Any, batch: list[str]) -> tuple[Any, Any, Any]:
    """Right-padded ids, labels (answer tokens + EOS only) and attention mask of a batch."""
    import torch

    seqs, labels = [], []
    for w in batch:
        prompt = tok.apply_chat_template(_messages(w), tokenize=False, add_generation_prompt=True)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer(w), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    lab = torch.tensor([lb + [-100] * (width - len(lb)) for lb in labels])
    return ids, lab, (ids != pad).long()


def build_teacher(
    dest: Path,
    *,
    max_steps: int = TEACHER_MAX_STEPS,
    target: float = TEACHER_TARGET,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the teacher on the task and save it at ``dest``.

    A plain PyTorch loop (not the engine's Trainer: for a model this small its per-step overhead
    dominates): batches of 64 random strings, AdamW with a one-cycle schedule, gradient clipping.
    From step ``TEACHER_MIN_STEPS`` on, every ``TEACHER_CHECK_EVERY`` steps the exact-match accuracy
    on strings it never trained on is measured; it stops once that reaches ``target``.
    """
    import torch

    from workers.engine.toy import tiny_llama

    started = time.perf_counter()
    tok = tokenizer()
    demo = set(words(DEMO_PROMPTS, DEMO_SEED))  # the demo prompts stay unseen by the teacher
    check = words(TEACHER_CHECK_SIZE, seed + 2, exclude=demo)
    excluded = demo | set(check)
    rng = random.Random(seed + 1)
    torch.manual_seed(seed)
    model = tiny_llama(len(tok), seed=seed, max_positions=MAX_POSITIONS, **TEACHER_SIZE)
    opt = torch.optim.AdamW(model.parameters(), lr=TEACHER_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=TEACHER_LR, total_steps=max_steps, pct_start=0.1
    )
    acc, step, loss_value = 0.0, 0, float("nan")
    for step in range(1, max_steps + 1):
        model.train()
        batch: list[str] = []
        while len(batch) < TEACHER_BATCH:
            w = _random_word(rng)
            if w not in excluded:
                batch.append(w)
        ids, labels, mask = _encode(tok, batch)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss_value = float(loss.item())
        if step >= TEACHER_MIN_STEPS and step % TEACHER_CHECK_EVERY == 0:
            acc = accuracy(model, check, tok=tok)
            if acc >= target:
                break
    if step < TEACHER_MIN_STEPS or step % TEACHER_CHECK_EVERY:
        acc = accuracy(model, check, tok=tok)
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix="demo-teacher-", dir=dest.parent))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    meta = {
        "recipe": RECIPE_VERSION,
        "role": "teacher",
        "task": "reverse a string of 3-6 distinct lowercase letters",
        "steps": step,
        "final_loss": round(loss_value, 4),
        "check_accuracy": round(acc, 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    _publish(tmp, dest)
    return meta


def build_student(dest: Path, *, seed: int = 1) -> dict[str, Any]:
    """A smaller random Llama with the teacher's tokenizer (so kd's vocabulary check passes)."""
    from workers.engine.toy import tiny_llama

    tok = tokenizer()
    tmp = Path(tempfile.mkdtemp(prefix="demo-student-", dir=dest.parent))
    tiny_llama(len(tok), seed=seed, max_positions=MAX_POSITIONS, **STUDENT_SIZE).save_pretrained(
        tmp
    )
    tok.save_pretrained(tmp)
    meta = {"recipe": RECIPE_VERSION, "role": "student base", "seed": seed}
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    _publish(tmp, dest)
    return meta


def build_demo_models(root: str | Path, *, max_steps: int = TEACHER_MAX_STEPS) -> dict[str, Any]:
    """Build both models under ``root`` unless a current build is already there. Idempotent:
    a folder with this recipe's marker is kept; a missing, half-built or older one is rebuilt."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    teacher, student = root / TEACHER_DIR, root / STUDENT_DIR
    built: dict[str, Any] = {}
    if not _is_built(teacher):
        built["teacher"] = build_teacher(teacher, max_steps=max_steps)
    if not _is_built(student):
        built["student"] = build_student(student)
    return {"teacher": str(teacher), "student": str(student), "built": built}


def accuracy(model: Any, held_out: list[str], *, tok: Any = None, batch_size: int = 256) -> float:
    """Exact-match accuracy of greedy answers on ``held_out`` strings; ``model`` is a loaded
    model (with ``tok``) or a folder."""
    import torch

    from workers.engine.quickgen import generate, load_for_inference

    if tok is None:
        model, tok = load_for_inference(str(model))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outs = generate(
            model,
            tok,
            [_messages(w) for w in held_out],
            max_new_tokens=MAX_LEN + 1,
            batch_size=batch_size,
        )
    model.train(was_training)
    return sum(o.text == answer(w) for o, w in zip(outs, held_out, strict=True)) / len(held_out)


def _iter_lines(rows: list[dict[str, Any]]) -> Iterator[str]:
    for r in rows:
        yield json.dumps(r) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.engine.demo_models")
    ap.add_argument("out", help="folder for demo-teacher/ and demo-student/, or the prompts file")
    ap.add_argument("--prompts", action="store_true", help="write the demo prompt set to OUT")
    ap.add_argument("--max-steps", type=int, default=TEACHER_MAX_STEPS)
    args = ap.parse_args(argv)
    if args.prompts:
        Path(args.out).write_text("".join(_iter_lines(prompt_rows())), encoding="utf-8")
        return 0
    import torch

    # One thread: tiny matrices gain nothing from more, and a busy machine's cores are shared.
    torch.set_num_threads(1)
    paths = build_demo_models(args.out, max_steps=args.max_steps)
    print(json.dumps(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
