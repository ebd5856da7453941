"""Train a student: response SFT or sparse logit distillation, on transformers' Trainer.

``train(TrainConfig(...), progress=fn, should_cancel=fn) -> TrainResult`` is the whole API; the CLI
and the app's task call it with plain data. Everything is validated (data, vocabulary) before the
model is loaded. The Trainer brings checkpoint/resume (optimizer, scheduler, RNG, data position),
CUDA + bf16 when present, and multi-GPU under ``accelerate launch`` / ``torchrun``.

Output folder: adapter (or full weights when lora=False), tokenizer, run.json (settings, data
sha256, base model), metrics.jsonl (one row per log), summary.json, checkpoints/.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from workers.engine.callbacks import (
    CancelCallback,
    ProgressCallback,
    ProgressFn,
    TokenMeter,
    trim_metrics,
)
from workers.engine.config import TrainConfig, TrainResult
from workers.engine.data import file_sha256, load_records
from workers.engine.examples import Collator, SequenceDataset, build_sequences, pack
from workers.engine.losses import kd_loss, masked_cross_entropy
from workers.engine.vocab import check_vocab

log = logging.getLogger(__name__)
ENGINE_VERSION = 1


class RunStateError(RuntimeError):
    pass


class DistillTrainer(Trainer):
    """Trainer whose loss is CE on shifted targets, plus α·T²·KL over stored top-k for KD."""

    def __init__(
        self,
        *args: Any,
        alpha: float,
        temperature: float,
        meter: TokenMeter,
        group_by_length: bool = False,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.alpha = alpha
        self.temperature = temperature
        self.meter = meter
        self.group_by_length = group_by_length
        # Our loss is a per-micro-batch mean, so the Trainer divides it for gradient accumulation.
        self.loss_is_scaled_for_ga = False

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped batches (HF's LengthGroupedSampler, fed our lengths) cut padding.

        Batches are drawn from random megabatches of 50 batches sorted by length, so the order
        stays random while each batch holds similar lengths; the Trainer seeds it like the default
        random sampler, so a resumed run skips the same batches.
        """
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length or not isinstance(dataset, SequenceDataset):
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=[len(s.input_ids) for s in dataset.sequences],
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        inputs = dict(inputs)
        targets = inputs.pop("labels")
        topk_ids = inputs.pop("topk_ids", None)
        topk_lp = inputs.pop("topk_logprobs", None)
        kd_mask = inputs.pop("kd_mask", None)
        if model.training:
            self.meter.tokens += int(inputs["attention_mask"].sum())
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        logits = outputs.logits
        if topk_ids is None:
            loss = masked_cross_entropy(logits, targets)
        else:
            assert topk_lp is not None and kd_mask is not None  # the KD collator adds all three
            loss = self.alpha * kd_loss(logits, topk_ids, topk_lp, kd_mask, self.temperature)
            if self.alpha < 1.0:
                loss = loss + (1.0 - self.alpha) * masked_cross_entropy(logits, targets)
        return (loss, outputs) if return_outputs else loss


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _write_json(path: str, payload: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, default=str)
    os.replace(tmp, path)


def _prepare_out_dir(config: TrainConfig, lineage: dict[str, Any]) -> str | None:
    """Create or check the output folder; return the checkpoint to resume from, if any."""
    run_path = os.path.join(config.out, "run.json")
    ckpt_dir = os.path.join(config.out, "checkpoints")
    # Under torchrun rank 0 writes run.json below while the other ranks get here: only rank 0
    # decides (if it refuses, torchrun stops the others).
    if os.path.exists(run_path) and not config.resume and _is_main_process():
        raise RunStateError(
            f"{config.out} already holds a run; pass resume or choose another folder"
        )
    resume_from = None
    if config.resume and os.path.isdir(ckpt_dir):
        resume_from = get_last_checkpoint(ckpt_dir)
    if resume_from and os.path.exists(run_path):
        with open(run_path, encoding="utf-8") as fh:
            previous = json.load(fh)
        if previous.get("data_sha256") != lineage["data_sha256"]:
            raise RunStateError(
                "the data file changed since the run started (sha256 differs); resuming would "
                "skip the wrong examples. Start a new run instead."
            )
    os.makedirs(config.out, exist_ok=True)
    if _is_main_process():
        if resume_from:
            step = int(os.path.basename(resume_from).split("-")[-1])
            trim_metrics(os.path.join(config.out, "metrics.jsonl"), step)
        else:
            metrics = os.path.join(config.out, "metrics.jsonl")
            if os.path.exists(metrics):
                os.remove(metrics)
        _write_json(
            run_path, {"settings": config.to_dict(), **lineage, "resumed_from": resume_from}
        )
    return resume_from


def _load_model(config: TrainConfig) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(config.base, dtype=torch.float32)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if not config.lora:
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _training_args(config: TrainConfig, has_eval: bool) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    bf16 = config.bf16 if config.bf16 is not None else (cuda and torch.cuda.is_bf16_supported())
    eval_steps = config.eval_steps or config.save_steps
    return TrainingArguments(
        output_dir=os.path.join(config.out, "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        seed=config.seed,
        bf16=bool(bf16),
        use_cpu=not cuda,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        dataloader_pin_memory=cuda,
    )


def train(
    config: TrainConfig,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Run (or resume) one training run. Raises DataValidationError, VocabMismatchError,
    RunStateError or ValueError before any model is loaded when the inputs are wrong.

    Calling it again with ``resume=True`` after a kill or a cancel continues from the latest
    checkpoint in ``out/checkpoints`` (step count, optimizer, scheduler, RNG, data position).
    """
    config.validate()
    records = load_records(config.data, config.method)
    eval_records = load_records(config.eval_data, config.method) if config.eval_data else None
    tokenizer = AutoTokenizer.from_pretrained(config.base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.method == "kd":
        teacher = (
            AutoTokenizer.from_pretrained(config.teacher_tokenizer)
            if config.teacher_tokenizer
            else None
        )
        vocab_rows = AutoConfig.from_pretrained(config.base).vocab_size
        check_vocab(tokenizer, teacher, records + (eval_records or []), vocab_rows)

    sequences, report = build_sequences(
        records, tokenizer, config.method, config.max_length, config.strip_reasoning
    )
    if report.message():
        log.warning("%s", report.message())
    if not sequences:
        raise ValueError("no example is left after truncation; raise max_length")
    if config.packing:
        sequences = pack(sequences, config.max_length)
    eval_dataset = None
    if eval_records:
        eval_seqs, _ = build_sequences(
            eval_records, tokenizer, config.method, config.max_length, config.strip_reasoning
        )
        eval_dataset = SequenceDataset(eval_seqs)

    lineage = {
        "engine_version": ENGINE_VERSION,
        "base_model": os.path.abspath(config.base),
        "data": os.path.abspath(config.data),
        "data_sha256": file_sha256(config.data),
        "eval_data_sha256": file_sha256(config.eval_data) if config.eval_data else None,
        "teacher_tokenizer": config.teacher_tokenizer,
        "examples": len(records),
        "train_rows": len(sequences),
        "truncation": report.as_dict(),
        "torch": torch.__version__,
    }
    resume_from = _prepare_out_dir(config, lineage)

    model = _load_model(config)
    meter = TokenMeter()
    cancel = CancelCallback(should_cancel) if should_cancel else None
    callbacks: list[Any] = [
        ProgressCallback(os.path.join(config.out, "metrics.jsonl"), meter, progress)
    ]
    if cancel:
        callbacks.append(cancel)
    trainer = DistillTrainer(
        model=model,
        args=_training_args(config, eval_dataset is not None),
        train_dataset=SequenceDataset(sequences),
        eval_dataset=eval_dataset,
        data_collator=Collator(tokenizer.pad_token_id, with_topk=config.method == "kd"),
        processing_class=tokenizer,
        callbacks=callbacks,
        alpha=config.alpha,
        temperature=config.temperature,
        meter=meter,
        group_by_length=config.group_by_length and not config.packing,
    )
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from)
    runtime = time.perf_counter() - started
    # Tokens/s over the training loop proper (the Trainer's train_runtime), as a plain Trainer
    # reports it: without the dataloader and optimizer set-up that precede it.
    loop_s = float(output.metrics.get("train_runtime") or runtime)
    state = trainer.state
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    cancelled = bool(cancel and cancel.cancelled)
    result = TrainResult(
        status="cancelled" if cancelled else "completed",
        out_dir=os.path.abspath(config.out),
        global_step=state.global_step,
        total_steps=state.max_steps,
        train_loss=losses[-1] if losses else output.training_loss,
        eval_loss=evals[-1] if evals else None,
        runtime_s=round(runtime, 3),
        tokens_per_s=round(meter.tokens / loop_s, 1) if loop_s > 0 else 0.0,
        tokens_seen=meter.tokens,
        truncation=report.as_dict(),
        checkpoint=os.path.join(config.out, "checkpoints", f"checkpoint-{state.global_step}")
        if cancelled
        else None,
    )
    if not cancelled and trainer.is_world_process_zero():
        trainer.save_model(config.out)
        tokenizer.save_pretrained(config.out)
    if trainer.is_world_process_zero():
        _write_json(os.path.join(config.out, "summary.json"), result.to_dict())
    return result
