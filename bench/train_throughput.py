"""Training tokens/s of the engine's sft against a plain transformers Trainer, same run, same data.

Same tiny Llama (character tokenizer), same LoRA settings, same prompts and completions with
realistic, skewed lengths, same batch size and step count. The baseline is the usual recipe:
chat-formatted text, prompt labels masked, DataCollatorForSeq2Seq padding to the longest in the
batch, Trainer's own loss. Tokens/s counts real (non-padding) tokens (attention-mask sum of the
batches trained on) over the Trainer's train_runtime, on both sides. The engine's sft batches by
length (group_by_length, its default) and its packing fills rows first-fit decreasing.

Second table, the app path: the same sft run launched through the app
(`training_run_launch` → the `run_training` task function, as a gpu worker calls it → the runner
supervising `python -m workers.engine train` as a child process, which streams its progress rows
into `TrainingMetric` rows and heart-beats the run), against `train()` called directly in this
process with the same settings, with a row every step (the worst case) and every 10 steps
(TrainConfig's default). Both tokens/s figures are the
engine's own (real tokens over the training loop); the app path's fixed costs (child start-up,
model load, merging the adapter, the model card) are reported separately as wall time. A throwaway
SQLite database and media folder under the bench's temp folder hold the app's rows.

Run: .venv/bin/python bench/train_throughput.py  [--app-only]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
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


APP_STEPS = 60
APP_CONFIG = {"max_steps": APP_STEPS, "batch_size": BATCH, "max_length": MAX_LEN,
              "save_steps": 10**6, "learning_rate": 2e-4, **LORA}  # fmt: skip
# A progress row (a TrainingMetric row on the app path) every step, the worst case, and every 10
# steps, TrainConfig's default.
LOGGING = (1, 10)


def engine_direct(base: str, data: Path, out: str, logging_steps: int) -> dict[str, float]:
    """The engine called in this process with the app run's settings."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints every logged row
        result = train(TrainConfig(data=str(data), base=base, out=out,
                                   logging_steps=logging_steps, **APP_CONFIG))  # type: ignore[arg-type]  # fmt: skip
    wall = time.perf_counter() - started
    return {"tokens_per_s": result.tokens_per_s, "wall_s": wall, "rows": APP_STEPS // logging_steps}


class App:
    """The app's training path on a throwaway SQLite database (Django set up once)."""

    def __init__(self, work: Path, base: str, data: Path) -> None:
        var = work / "var"
        os.environ["DISTILLERY_VAR_DIR"] = str(var)
        os.environ["DATABASE_URL"] = f"sqlite:///{var / 'bench.sqlite3'}"
        os.environ.pop("DISTILLERY_MEDIA_ROOT", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "distillapp.settings"
        # The child trains with as many threads as the direct call.
        os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
        var.mkdir(parents=True, exist_ok=True)
        import django

        django.setup()
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from distillapp.accounts.models import Organization
        from distillapp.core import dispatch
        from distillapp.core.runs.models import RunStatus
        from distillapp.datasets.models import Dataset, DatasetVersion
        from distillapp.projects.models import Project
        from distillapp.training.models import BaseModel, BaseModelSource

        call_command("migrate", verbosity=0)
        dispatch.enqueue = lambda *a, **k: None  # the bench calls the task function itself
        self.user = get_user_model().objects.create(username="bench")
        org = Organization.objects.create(name="bench")
        self.project = Project.objects.create(org=org, name="bench", created_by=self.user)
        folder = Path(settings.MEDIA_ROOT) / "datasets" / "bench"
        folder.mkdir(parents=True)
        (folder / "train.jsonl").write_bytes(data.read_bytes())
        rows = data.read_text().count("\n")
        self.version = DatasetVersion.objects.create(
            dataset=Dataset.objects.create(project=self.project, name="bench"),
            project=self.project, number=1, status=RunStatus.SUCCEEDED, path="datasets/bench",
            sha256="0" * 64, counts={"rows": rows, "train": rows, "validation": 0, "kd_rows": 0},
        )  # fmt: skip
        self.base_model = BaseModel.objects.create(
            project=self.project, name="base", source=BaseModelSource.PATH, path=base,
            resolved_path=base, status=RunStatus.SUCCEEDED,
            inspection={"chars_per_token": 1.0, "architecture": "LlamaForCausalLM"},
        )  # fmt: skip

    def run(self, logging_steps: int) -> dict[str, float]:
        from distillapp.training.models import TrainingMetric
        from distillapp.training.services import training_run_launch
        from workers.tasks.training import run_training

        started = time.perf_counter()
        run = training_run_launch(
            project=self.project, user=self.user, dataset_version_id=self.version.pk,
            base_model_id=self.base_model.pk, method="sft",
            config={**APP_CONFIG, "logging_steps": logging_steps},
        )  # fmt: skip
        status = run_training(run.pk)
        wall = time.perf_counter() - started
        run.refresh_from_db()
        if status != "succeeded":
            raise SystemExit(f"app run {run.pk} {status}: {run.message}\n{run.log_tail[-2000:]}")
        return {
            "tokens_per_s": float(run.result["tokens_per_s"]),
            "wall_s": wall,
            "rows": TrainingMetric.objects.filter(run=run).count(),
        }


def app_path(work: Path, base: str, data: Path, repeats: int) -> None:
    app = App(work, base, data)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for rep in range(repeats):  # interleaved, as above
        for every in LOGGING:
            out = str(work / f"d{every}-{rep}")
            runs.setdefault(("engine called directly", every), []).append(
                engine_direct(base, data, out, every)
            )
            runs.setdefault(("app path", every), []).append(app.run(every))
    print()
    print(f"app path vs the engine called directly: sft, LoRA r={LORA['lora_r']}, batch {BATCH}, "
          f"{APP_STEPS} steps, max_length {MAX_LEN}, {repeats} interleaved repeats, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| variant | progress row every | real tokens/s in the loop (median) | runs | metric rows "
          "| wall time per run (median) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for (name, every), values in runs.items():
        tps = [v["tokens_per_s"] for v in values]
        print(f"| {name} | {every} step(s) | {statistics.median(tps):,.0f} | "
              f"{', '.join(f'{v:,.0f}' for v in tps)} | {', '.join(str(int(v['rows'])) for v in values)} | "
              f"{statistics.median(v['wall_s'] for v in values):.1f}s |")  # fmt: skip
    for every in LOGGING:
        direct, via_app = runs[("engine called directly", every)], runs[("app path", every)]
        # Each app run against the direct run just before it: load that drifts between pairs cancels.
        paired = [
            a["tokens_per_s"] / d["tokens_per_s"] for d, a in zip(direct, via_app, strict=True)
        ]
        medians = statistics.median(v["tokens_per_s"] for v in via_app) / statistics.median(
            v["tokens_per_s"] for v in direct
        )
        fixed = statistics.median(v["wall_s"] for v in via_app) - statistics.median(
            v["wall_s"] for v in direct
        )
        print(f"row every {every}: app/direct per pair {', '.join(f'{r:.2f}' for r in paired)}; "
              f"overhead {(1 - statistics.median(paired)) * 100:.1f}% (median of pairs), "
              f"{(1 - medians) * 100:.1f}% (ratio of medians); target <= 5%. Fixed cost per run "
              f"(child start-up, merge, model card): {fixed:+.1f}s of wall time")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-only", action="store_true", help="only the app path vs direct table")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="repeats of the app path table")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    work = Path(tempfile.mkdtemp(prefix="throughput_bench_"))
    tok = char_tokenizer()
    base = str(work / "base")
    tiny_llama(len(tok), max_positions=MAX_LEN, **MODEL).save_pretrained(base)
    tok.save_pretrained(base)
    data = work / "data.jsonl"
    make_data(data)
    if not args.app_only:
        engine_vs_trainer(base, data, work)
    app_path(work, base, data, args.repeats)


def engine_vs_trainer(base: str, data: Path, work: Path) -> None:
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
