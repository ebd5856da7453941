"""Training tokens/s of the engine's sft against a plain transformers Trainer, same run, same data.

Same tiny Llama (character tokenizer), same LoRA settings, same prompts and completions with
realistic, skewed lengths, same batch size and step count. The baseline is the usual recipe:
chat-formatted text, prompt labels masked, DataCollatorForSeq2Seq padding to the longest in the
batch, Trainer's own loss. Tokens/s counts real (non-padding) tokens (attention-mask sum of the
batches trained on) over the Trainer's train_runtime, on both sides. The engine's sft batches by
length (group_by_length, its default) and its packing fills rows first-fit decreasing.

Run: .venv/bin/python bench/train_throughput.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainingArguments,
)

from workers.engine.config import TrainConfig  # noqa: E402
from workers.engine.toy import char_tokenizer, tiny_llama  # noqa: E402
from workers.engine.train import train  # noqa: E402

STEPS, BATCH, MAX_LEN, REPEATS = 30, 8, 512, 3
MODEL = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 256}
LORA = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}


def make_data(path: Path, n: int = 2000) -> None:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz "
    rows = []
    for _ in range(n):
        prompt = "".join(rng.choice(letters) for _ in range(rng.randint(10, 60)))
        length = min(400, int(rng.expovariate(1 / 80)) + 5)  # most answers short, a few long
        rows.append({"messages": [{"role": "user", "content": prompt}],
                     "completion": "".join(rng.choice(letters) for _ in range(length))})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def baseline(base: str, data: Path, out: str) -> float:
    tok = AutoTokenizer.from_pretrained(base)
    features = []
    for line in data.read_text().splitlines():
        row = json.loads(line)
        prompt = (
            "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in row["messages"])
            + "<|assistant|>\n"
        )
        p = tok(prompt)["input_ids"]
        c = tok(row["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (p + c)[:MAX_LEN]
        features.append({"input_ids": ids, "labels": ([-100] * len(p) + c)[:MAX_LEN]})
    model = AutoModelForCausalLM.from_pretrained(base)
    model = get_peft_model(model, LoraConfig(r=LORA["lora_r"], lora_alpha=LORA["lora_alpha"],
                                             lora_dropout=LORA["lora_dropout"], target_modules="all-linear",
                                             task_type="CAUSAL_LM"))  # fmt: skip
    pad = DataCollatorForSeq2Seq(tok, padding=True)
    seen = {"tokens": 0}

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = pad(batch)
        seen["tokens"] += int(out["attention_mask"].sum())
        return out

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, max_steps=STEPS,
                             learning_rate=2e-4, save_strategy="no", report_to="none", disable_tqdm=True,
                             logging_steps=1000, use_cpu=True, seed=42)  # fmt: skip
    result = Trainer(model=model, args=args, train_dataset=features, data_collator=collate).train()
    return seen["tokens"] / result.metrics["train_runtime"]


def engine(base: str, data: Path, out: str, packing: bool) -> float:
    cfg = TrainConfig(data=str(data), base=base, out=out, max_steps=STEPS, batch_size=BATCH,
                      max_length=MAX_LEN, packing=packing, save_steps=10**6, logging_steps=1000,
                      learning_rate=2e-4, **LORA)  # fmt: skip
    return train(cfg).tokens_per_s


def main() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    work = Path(tempfile.mkdtemp(prefix="throughput_bench_"))
    tok = char_tokenizer()
    base = str(work / "base")
    tiny_llama(len(tok), max_positions=MAX_LEN, **MODEL).save_pretrained(base)
    tok.save_pretrained(base)
    data = work / "data.jsonl"
    make_data(data)
    runs: dict[str, list[float]] = {
        "plain Trainer": [],
        "engine sft": [],
        "engine sft + packing": [],
    }
    for rep in range(REPEATS):  # interleaved so background load hits every variant alike
        runs["plain Trainer"].append(baseline(base, data, str(work / f"b{rep}")))
        runs["engine sft"].append(engine(base, data, str(work / f"e{rep}"), packing=False))
        runs["engine sft + packing"].append(engine(base, data, str(work / f"p{rep}"), packing=True))
    print(f"tiny Llama {MODEL}, LoRA r={LORA['lora_r']}, batch {BATCH}, {STEPS} steps, max_length {MAX_LEN}, "
          f"{REPEATS} interleaved repeats, {torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| variant | real tokens/s (median) | runs | vs plain Trainer |")
    print("|---|---|---|---|")
    ref = statistics.median(runs["plain Trainer"])
    for name, values in runs.items():
        med = statistics.median(values)
        print(
            f"| {name} | {med:,.0f} | {', '.join(f'{v:,.0f}' for v in values)} | {med / ref:.2f}x |"
        )
    print("targets: engine sft >= 1.0x, with packing >= 1.5x")


if __name__ == "__main__":
    main()
