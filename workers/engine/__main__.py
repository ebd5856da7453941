"""Command line: ``python -m workers.engine train|merge|generate ...``.

Errors in the inputs (data, vocabulary, settings) print a message and exit with status 2 before
any training starts; progress rows are printed as JSON lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any


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
    p.add_argument("--lr-scheduler", default="linear")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-steps", type=int, default=200)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument(
        "--stop-file",
        help="stop (checkpoint and exit 0) once this file exists; SIGTERM does the same",
    )


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
        lr_scheduler=args.lr_scheduler,
        weight_decay=args.weight_decay,
        gradient_checkpointing=args.gradient_checkpointing,
        save_steps=args.save_steps,
        logging_steps=args.logging_steps,
        eval_steps=args.eval_steps,
        seed=args.seed,
        resume=args.resume,
    )
    stop = StopSignal(args.stop_file)
    try:
        result = train(config, progress=progress_printer(), should_cancel=stop.should_stop)
    except (DataValidationError, VocabMismatchError, RunStateError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        _emit({"result": result.to_dict()})
    return 0


def _emit(payload: dict[str, Any]) -> None:
    """One JSON line on stdout. A supervisor that died leaves a broken pipe: training goes on
    (metrics.jsonl keeps every row) until the stop signal says otherwise."""
    with contextlib.suppress(BrokenPipeError, OSError):
        print(json.dumps(payload), flush=True)


def progress_printer() -> Callable[[dict[str, Any]], None]:
    """Progress rows with the device and peak memory added (the app's run page shows both)."""
    import resource

    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        device = f"{world} x {device}"

    def emit(row: dict[str, Any]) -> None:
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        else:  # ru_maxrss is KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _emit({**row, "device": device, "peak_memory_mb": round(peak, 1)})

    return emit


class StopSignal:
    """Cooperative stop: a stop file or SIGTERM (also what a dead parent sends through
    PR_SET_PDEATHSIG). Under torchrun every rank must stop at the same step, so the flag is
    all-reduced (max) across ranks each step; otherwise one rank would wait forever for the other.
    """

    def __init__(self, stop_file: str | None) -> None:
        self.stop_file = stop_file
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True

    def should_stop(self) -> bool:
        local = self.requested or bool(self.stop_file and os.path.exists(self.stop_file))
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            flag = torch.tensor([1 if local else 0], dtype=torch.int32)
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return bool(flag.item())
        return local


def _run_inspect(args: argparse.Namespace) -> int:
    from workers.engine.inspection import InspectionError, inspect_model, resolve_hub_id

    try:
        folder = args.model or resolve_hub_id(args.hub_id, args.cache_dir)
        teachers = dict(t.split("=", 1) for t in args.teacher or [])
        report = inspect_model(folder, teachers=teachers)
    except InspectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit({"result": report})
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from workers.engine.quantize import QuantizeError, quantize

    try:
        report = quantize(
            args.model,
            args.out,
            scheme=args.scheme,
            eval_data=args.eval_data,
            max_length=args.max_length,
        )
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _emit({"result": report})
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


def _quiet_cuda_only_kernels() -> None:
    """torchao (imported by peft) warns on every start that its CUDA kernel libraries failed to
    load. Without a GPU that is expected, and it buried the lines people read in the run's log;
    with one, the warning still shows."""
    import torch

    if not torch.cuda.is_available():
        logging.getLogger("torchao").setLevel(logging.ERROR)
    # torchao registers its enums the way torch 2.13 deprecates: a notice per enum, per start.
    logging.getLogger("torch.utils._pytree").addFilter(
        lambda record: "is an Enum subclass" not in record.getMessage()
    )


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
    i = sub.add_parser("inspect", help="describe a model folder (or a cached hub id) as JSON")
    source = i.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model folder")
    source.add_argument("--hub-id", help="a Hugging Face Hub id, resolved from the cache only")
    i.add_argument("--cache-dir", help="huggingface_hub cache folder (with --hub-id)")
    i.add_argument(
        "--teacher", action="append", help="NAME=DIR: check the vocabulary against a teacher"
    )
    q = sub.add_parser("quantize", help="torchao weight-only quantisation of a merged model")
    q.add_argument("--model", required=True, help="a full (merged) model folder")
    q.add_argument("--out", required=True)
    q.add_argument("--scheme", choices=["int8", "int4"], default="int8")
    q.add_argument("--eval-data", help="JSONL: loss before and after on these examples")
    q.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args(argv)
    _quiet_cuda_only_kernels()
    handlers = {
        "train": _run_train,
        "merge": _run_merge,
        "generate": _run_generate,
        "inspect": _run_inspect,
        "quantize": _run_quantize,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
