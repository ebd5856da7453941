"""Command line: ``python -m workers.engine train|merge|generate ...``.

Errors in the inputs (data, vocabulary, settings) print a message and exit with status 2 before
any training starts; progress rows are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _train_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a LoRA (or full) student by sft or kd")
    p.add_argument("--data", required=True)
    p.add_argument("--base", required=True, help="student base model folder")
    p.add_argument("--method", choices=["sft", "kd"], default="sft")
    p.add_argument("--out", required=True)
    p.add_argument("--eval-data")
    p.add_argument("--teacher-tokenizer", help="teacher tokenizer folder (kd vocabulary check)")
    p.add_argument("--full-finetune", action="store_true", help="train every weight, no LoRA")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="all-linear", help="comma list or all-linear")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--packing", action="store_true")
    p.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="keep the data order instead of batching examples of similar length (less padding)",
    )
    p.add_argument(
        "--strip-reasoning", action="store_true", help="drop <think>…</think> from targets"
    )
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--warmup", type=float, default=0.0, help="steps, or a fraction when < 1")
    p.add_argument("--save-steps", type=int, default=200)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")


def _run_train(args: argparse.Namespace) -> int:
    from workers.engine.config import TrainConfig
    from workers.engine.data import DataValidationError
    from workers.engine.train import RunStateError, train
    from workers.engine.vocab import VocabMismatchError

    modules = args.target_modules
    config = TrainConfig(
        data=args.data,
        base=args.base,
        out=args.out,
        method=args.method,
        eval_data=args.eval_data,
        teacher_tokenizer=args.teacher_tokenizer,
        lora=not args.full_finetune,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=modules if modules == "all-linear" else modules.split(","),
        learning_rate=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        packing=args.packing,
        group_by_length=args.group_by_length,
        strip_reasoning=args.strip_reasoning,
        temperature=args.temperature,
        alpha=args.alpha,
        warmup_steps=args.warmup,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        eval_steps=args.eval_steps,
        seed=args.seed,
        resume=args.resume,
    )
    try:
        result = train(config, progress=lambda row: print(json.dumps(row), flush=True))
    except (DataValidationError, VocabMismatchError, RunStateError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"result": result.to_dict()}), flush=True)
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from workers.engine.merge import merge

    try:
        print(merge(args.adapter, args.out, base=args.base))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from workers.engine.data import DataValidationError, load_prompts
    from workers.engine.quickgen import generate, load_for_inference

    try:
        prompts = load_prompts(args.data)
    except DataValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model, tokenizer = load_for_inference(args.model)
    outputs = generate(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    lines = [
        json.dumps({"messages": m, "completion": g.text})
        for m, g in zip(prompts, outputs, strict=True)
    ]
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engine")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    m = sub.add_parser("merge", help="fold a LoRA adapter into its base model")
    m.add_argument("--adapter", required=True, help="a train output folder")
    m.add_argument("--out", required=True)
    m.add_argument("--base", help="override the base model recorded in run.json")
    g = sub.add_parser("generate", help="batched greedy generation for quick checks")
    g.add_argument("--model", required=True, help="a model folder or a LoRA output folder")
    g.add_argument("--data", required=True, help="JSONL with 'messages' per line")
    g.add_argument("--out", help="write JSONL here instead of stdout")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    handlers = {"train": _run_train, "merge": _run_merge, "generate": _run_generate}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
