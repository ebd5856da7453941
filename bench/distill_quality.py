"""Does the product make better students? Sorting letters, exact match, through Distillery's own path.

Task (workers/engine/tasks_synthetic.py): eight distinct letters from a-o, then ">"; the answer is
the letters in order ("kdbhafom>" -> "abdfhkmo"). A teacher trained on it with plain
cross-entropy ranks the letters it has not written yet by their order, so its distribution says
more than the one-hot target does (the second most likely letter is the next one in order, and
so on).

Bench set-up (not the product): a tiny Llama teacher (BOS written by its chat template, as
Llama's is) is trained here by ``workers.engine.train`` on 4,500 problems' ground truth, and one
random student initialisation per seed is saved, all under a model root
(DISTILLERY_MODEL_ROOTS). Everything after that is the product, called in-process as the views,
the API and the Celery tasks call it (bench/product_path.py: a throwaway SQLite database and
media folder; each task the services send after commit is run here by calling the task function,
as a worker does; training and eval tasks run on two worker threads, like two ``gpu`` workers):

  1. ``user_create``, ``organization_create``, ``project_create``; ``prompt_set_import`` of a
     JSONL file with the students' 100 problems (``split: train``) and 1,000 held-out problems
     (``split: heldout``), each with its ``reference``; ``teacher_create`` registers the teacher
     folder as an ``hf_local`` teacher (greedy, max_tokens 9, top_logprobs 20);
     ``base_model_create`` registers each seed's student folder, and
     ``workers.tasks.training.inspect_base_model`` inspects it (a child process; it also checks
     that KD from the teacher is possible);
  2. one ``generation_job_start`` per K (overriding ``top_logprobs``) and one with no top-k for
     the ground-truth data; ``workers.tasks.generation.run_generation_job`` runs each (the local
     runner: ``generate_local`` in batches, DTK1 top-k per completion), and the automatic filter
     run each job triggers (``workers.tasks.filters.execute_filter_run``: default checks,
     including the reference check, then ``review_queue_sync``);
  3. a reviewer (``review_claim_next`` + ``review_decide``) approves every teacher answer of the
     top-k jobs; for the ground-truth job the reviewer *edits* every answer to the prompt's
     reference (``verdict_restore`` first for an answer the filters dropped). An edit is the
     product's only way to make a reference the training target, and the dataset build prefers
     edits, so that version's targets are exactly the references: the "scratch on ground truth"
     student. One ``dataset_create`` + ``dataset_version_build`` per job (recipe: that job, approved
     rows only), built by ``workers.tasks.datasets.build_dataset_version`` (train.jsonl,
     train_kd.jsonl with ``topk_ref`` into topk.bin);
  4. ``training_run_launch`` per student and seed: method sft (scratch: ground-truth version; sft:
     the top-20 version) or kd (the version of its K, teacher found from the version's lineage),
     lora false (random students), 300 steps x 32, lr 5e-3, cosine, 5 % warm-up, max_length 40,
     seed = the seed; ``workers.tasks.training.run_training`` runs each (``training_run_execute``
     spawns ``python -m workers.engine train`` and supervises it);
  5. ``eval_set_from_heldout`` (the 1,000 held-out problems with their references) and
     ``eval_run_create`` (greedy, max_tokens 9): one run for the teacher, one per seed with that
     seed's students (an eval run takes at most 12 models); ``workers.tasks.evaluation.run_eval``
     answers through ``generate_local`` and scores; exact match is read from
     ``EvalRun.results["subsets"]["all"][model]["overall"]["exact_match"]``.

Students: (a) scratch, sft on the ground truth; (b) sft on the teacher's answers; (c) kd with the
full distribution (K = V = 20, which is also the product's largest K, ``MAX_TOP_LOGPROBS``, so
"top-20" is this row); (d) kd with top-5; kd rows at the engine's default T = 2 and, as
``name@T``, at other temperatures. KD uses alpha = 1 (KL only) unless ``--alpha`` or a row's
``:aA`` suffix (``kd_top5@4:a0.5``: half KL, half cross-entropy on the target) says otherwise.
(f) ``kd_top5s`` / ``kd_top20s``: kd on *sampled* answers: one more generation job asks the teacher
for ``--samples`` answers per prompt at ``--sample-temperature`` (seed 1; the stored top-k is the
teacher's raw distribution at each position of the sampled answer), the reviewer restores the
wrong ones the reference check dropped, and the build's pair dedupe keeps distinct answers only.
Same prompts and steps as the others, more rows.
``--data-seed`` draws other problems (the teacher's pool, the students' prompts and the held-out
set), to confirm a setting chosen on one held-out set on another; 0 is the default draw. Generation jobs store the
teacher's log-probs at temperature 1 (raw logits); the product has no capture temperature, so T
is the training temperature. Five seeds (student initialisation and data order); the teacher and
the data are the same for all seeds, so the seeds pair up: paired t-test and one-sided Wilcoxon
signed-rank over seeds. README "Distillation quality" and docs/engine.md have the results.

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process, here and in the trainer processes the runs start (they inherit the
# environment): on a shared 2-core box two single-threaded processes beat two-thread ones.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from bench.product_path import BROKER, Task, django_setup, run_tasks  # noqa: E402

TEACHER = {"hidden": 96, "layers": 3, "heads": 4, "intermediate": 384}
STUDENT = {"hidden": 48, "layers": 2, "heads": 2, "intermediate": 96}
# TrainConfig settings of every student run, by the names training_run_launch takes.
COMMON: dict[str, Any] = {
    "lora": False,  # random students: LoRA on a random base has nothing to adapt
    "save_steps": 10**6,
    "logging_steps": 100,
    "max_length": 40,
    "warmup_steps": 0.05,
    "lr_scheduler": "cosine",
    "batch_size": 32,
    "alpha": 1.0,
}
LABELS = {
    "scratch": "(a) scratch, ground truth",
    "sft": "(b) sft on teacher answers",
    "kd_full": "(c) kd, full distribution (K=V=20)",
    "kd_top5": "(d) kd, top-5",
    "kd_top2": "(e) kd, top-2",
    "kd_top5s": "(f) kd, top-5, on sampled answers",
    "kd_top20s": "(f) kd, full distribution, on sampled answers",
}
GROUND_TRUTH = "ground truth"
TRAIN_TASK = "workers.tasks.training.run_training"
EVAL_TASK = "workers.tasks.evaluation.run_eval"
INSPECT_TASK = "workers.tasks.training.inspect_base_model"


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def n_params(model_dir: str) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())


def label(name: str) -> str:
    rest, _, alpha = name.partition(":a")
    base, _, temp = rest.partition("@")
    return LABELS[base] + (f", T={temp}" if temp else "") + (f", alpha={alpha}" if alpha else "")


def temperature_of(name: str, default: float) -> float:
    """``name@T`` trains at T (``kd_top5@4``), else at the default."""
    rest = name.partition(":a")[0]
    return float(rest.split("@")[1]) if "@" in rest else default


def alpha_of(name: str, default: float) -> float:
    """``name:aA`` weighs the KD term by A and cross-entropy by 1 - A (``kd_top5@4:a0.5``)."""
    return float(name.partition(":a")[2] or default)


def top_k_of(name: str, vocab: int) -> int | None:
    """The K a student's data needs (None: no top-k, sft)."""
    base = name.partition(":a")[0].split("@")[0]
    if base == "kd_full":
        return vocab
    if base.startswith("kd_top"):
        return int(base.removeprefix("kd_top").removesuffix("s"))
    return None


def sampled(name: str) -> bool:
    """``kd_top5s``: KD on the answers of a sampled job (``--samples`` per prompt at
    ``--sample-temperature``), wrong ones kept, instead of the greedy answers."""
    return name.partition(":a")[0].split("@")[0].endswith("s")


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


def build_models(args: argparse.Namespace, task: Any, pool: list[str], models: Path) -> int:
    """Bench set-up: train the teacher on ground truth, save the student initialisations."""
    from workers.engine.config import TrainConfig
    from workers.engine.tasks_synthetic import SORT_CHARS
    from workers.engine.toy import BOS_CHAT_TEMPLATE, char_tokenizer, tiny_llama
    from workers.engine.train import train

    tok = char_tokenizer(SORT_CHARS, chat_template=BOS_CHAT_TEMPLATE)

    def make_base(name: str, seed: int, size: dict[str, int]) -> str:
        path = models / name
        tiny_llama(len(tok), seed=seed, max_positions=48, **size).save_pretrained(path)
        tok.save_pretrained(path)
        return str(path)

    for seed in range(args.seeds):
        make_base(f"student_base_{seed}", seed, STUDENT)
    gt = models.parent / "teacher_gt.jsonl"
    gt.write_text(
        "".join(
            json.dumps({"messages": task.messages(p), "completion": task.answer(p)}) + "\n"
            for p in pool
        )
    )
    t0 = time.perf_counter()
    train(
        TrainConfig(
            data=str(gt),
            base=make_base("teacher_base", 1234, TEACHER),
            out=str(models / "teacher"),
            learning_rate=3e-3,
            batch_size=64,
            max_steps=args.teacher_steps,
            seed=1,
            lora=False,
            save_steps=10**6,
            logging_steps=100,
            max_length=40,
            save_total_limit=1,
            warmup_steps=0.05,
            lr_scheduler="cosine",
        )
    )
    print(f"teacher trained ({args.teacher_steps} steps, {time.perf_counter() - t0:.0f}s)")
    return len(tok)


def version_key(name: str, k: int | None, max_k: int, sft_k: int) -> Any:
    """Which job's dataset version a student trains on (the keys of `jobs` and `versions`)."""
    if name == "scratch":
        return GROUND_TRUTH
    if k is None:
        return sft_k  # sft: the greedy answers of the largest-K job
    return f"sampled top-{min(k, max_k)}" if sampled(name) else min(k, max_k)


def version_name(key: Any) -> str:
    if key == GROUND_TRUTH:
        return "ground truth (reviewer edits)"
    return key if isinstance(key, str) else f"teacher top-{key}"


def review_all(
    project: Any, user: Any, ground_truth_job: Any, keep_wrong: tuple[Any, ...] = ()
) -> dict[str, int]:
    """A reviewer goes through the queue: approves the teacher's answers, and for the
    ground-truth job edits each answer to the prompt's reference (restoring any the filters
    dropped first, so a wrong teacher answer still gets its reference). In the `keep_wrong` jobs
    (sampled answers) the reviewer restores what the reference check dropped: KD learns the
    teacher's distribution along each sampled answer, right or wrong."""
    from distillapp.filters.models import VerdictState
    from distillapp.filters.services import verdict_restore
    from distillapp.generation.models import Completion
    from distillapp.review.services import review_claim_next, review_decide, review_queue_sync

    counts = {"approve": 0, "edit": 0, "restored": 0}
    for completion in Completion.objects.filter(
        job__in=[ground_truth_job, *keep_wrong], verdict__state=VerdictState.FILTERED
    ):
        verdict_restore(completion=completion, user=user)
        counts["restored"] += 1
    review_queue_sync(project=project, force=True)
    while (completion := review_claim_next(project=project, reviewer=user)) is not None:
        if completion.job_id == ground_truth_job.pk:
            review_decide(
                completion=completion,
                reviewer=user,
                decision="edit",
                edited_text=completion.prompt.reference,
            )
            counts["edit"] += 1
        else:
            review_decide(completion=completion, reviewer=user, decision="approve")
            counts["approve"] += 1
    return counts


def teacher_stats(job: Any) -> str:
    """The teacher on the students' prompts: exact match and how confident its top-1 is."""
    import numpy as np

    from workers.engine import topk_format

    hit = n = 0
    top1 = []
    for text, reference, blob in job.completions.values_list("text", "prompt__reference", "topk"):
        n += 1
        hit += text == reference
        if blob is not None:
            record = topk_format.decode(bytes(blob))
            top1.append(np.exp(record.topk_logprobs[:, 0].astype(float)))
    line = f"teacher on the students' prompts (job {job.pk}): exact match {hit / max(n, 1):.3f}"
    if top1:
        p = np.concatenate(top1)
        line += f"; mean top-1 probability {p.mean():.3f}, median {np.median(p):.4f}"
    return line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny counts, to smoke-test the script")
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--repeats", action="store_true", help="letters may repeat")
    ap.add_argument("--teacher-steps", type=int, default=500)
    ap.add_argument("--teacher-prompts", type=int, default=4500, help="the teacher's training pool")
    ap.add_argument("--student-steps", type=int, default=300)
    ap.add_argument("--student-prompts", type=int, default=100)
    ap.add_argument("--student-lr", type=float, default=5e-3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument(
        "--alpha",
        type=float,
        default=1.0,
        help="kd rows: weight of the KD term, 1 - alpha on cross-entropy (a row's :aA overrides)",
    )
    ap.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="which problems are drawn (teacher pool, students' prompts, held-out set)",
    )
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4, help="answers per prompt of sampled jobs")
    ap.add_argument("--sample-temperature", type=float, default=2.0)
    ap.add_argument("--results", default="", help="also write the results JSON to this file")
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--students",
        default="scratch,sft,kd_full,kd_top5,kd_full@1,kd_top5@1,kd_full@4,kd_top5@4,kd_top5@8",
    )
    args = ap.parse_args()
    if args.quick:
        args.length, args.teacher_steps, args.teacher_prompts, args.student_steps = 5, 200, 2000, 10
        args.seeds, args.held_out, args.student_prompts = 2, 100, 40
    _threads()
    from workers.engine.tasks_synthetic import SortTask

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill_bench_"))
    models = work / "models"
    task = SortTask(length=args.length, repeats=args.repeats)
    pool, held = task.split(train=args.teacher_prompts, held_out=args.held_out, seed=args.data_seed)
    prompts = pool[: args.student_prompts]
    names = [n for n in args.students.split(",") if n]

    vocab = build_models(args, task, pool, models)
    teacher_dir = str(models / "teacher")
    teacher_params = n_params(teacher_dir)
    student_params = n_params(str(models / "student_base_0"))
    django_setup(work / "app", model_root=models)

    from distillapp.accounts.services import organization_create, user_create
    from distillapp.core.runs.models import RunStatus
    from distillapp.datasets.models import DatasetVersion
    from distillapp.datasets.services import dataset_create, dataset_version_build
    from distillapp.evaluation.models import EvalRun
    from distillapp.evaluation.run_services import MAX_MODELS, ModelChoice, eval_run_create
    from distillapp.evaluation.services import eval_set_from_heldout
    from distillapp.filters.config import EXACT_DUPLICATE, FILTER_NAMES, JUDGE, NEAR_DUPLICATE
    from distillapp.filters.services import filter_config_update
    from distillapp.generation.decoding import MAX_TOP_LOGPROBS
    from distillapp.generation.models import GenerationJob, TeacherKind
    from distillapp.generation.services import generation_job_start, teacher_create
    from distillapp.projects.services import project_create
    from distillapp.prompts.services import prompt_set_import
    from distillapp.training.models import BaseModel, TrainingRun
    from distillapp.training.services import base_model_create, training_run_launch

    # 1. Organisation, project, prompts (train and held-out), teacher, student base models.
    user = user_create(username="bench", password=os.urandom(12).hex())
    org = organization_create(name="Bench", owner=user)
    project = project_create(org=org, name="Sorting letters", created_by=user)
    # The same teacher answers the same prompts once per K on purpose, and the filters' duplicate
    # checks drop a later job's copy of an earlier answer (same prompt included): off here. The
    # others, the reference check among them, stay on.
    filter_config_update(
        project=project,
        data={
            "enabled": [
                n for n in FILTER_NAMES if n not in (EXACT_DUPLICATE, NEAR_DUPLICATE, JUDGE)
            ]
        },
    )
    upload = work / "sort_prompts.jsonl"
    with upload.open("w") as fh:
        for split, items in (("train", prompts), ("heldout", held)):
            for p in items:
                row = {"id": p, "prompt": task.prompt(p), "reference": task.answer(p)}
                fh.write(json.dumps({**row, "split": split}) + "\n")
    imported = prompt_set_import(
        project=project, file=upload, name="Sort letters", heldout_fraction=0.0, created_by=user
    )
    print(
        f"prompt set: {imported.imported} prompts imported ({imported.heldout} held out, "
        f"{imported.duplicates_dropped} duplicates dropped)",
        flush=True,
    )
    max_k = MAX_TOP_LOGPROBS
    if vocab > max_k:
        print(f"note: the vocabulary has {vocab} ids but top-k is capped at {max_k}")
    teacher = teacher_create(
        project=project,
        name="Sorting teacher (bench-trained)",
        kind=TeacherKind.HF_LOCAL,
        model_path=teacher_dir,
        device="cpu",
        dtype="float32",
        batch_size=min(1024, len(prompts)),
        decoding={"temperature": 0.0, "max_tokens": args.length + 1, "top_logprobs": max_k},
    )
    bases = [
        base_model_create(
            project=project,
            user=user,
            name=f"student seed {s}",
            path=str(models / f"student_base_{s}"),
        )
        for s in range(args.seeds)
    ]
    run_tasks(BROKER.take(INSPECT_TASK), workers=args.workers)
    for base in bases:
        base.refresh_from_db()
        assert base.status == RunStatus.SUCCEEDED, base.message

    # 2. Generation jobs: one per K the students need, one with no top-k for the ground truth.
    ks = sorted(
        {min(k, max_k) for n in names if (k := top_k_of(n, vocab)) is not None and not sampled(n)}
    )
    sampled_ks = sorted(
        {min(k, max_k) for n in names if (k := top_k_of(n, vocab)) is not None and sampled(n)}
    )
    if not ks and any(n != "scratch" and top_k_of(n, vocab) is None for n in names):
        ks = [max_k]  # sft learns the greedy answers: one greedy job, whatever its K
    sft_k = max(ks) if ks else 0
    jobs: dict[Any, GenerationJob] = {}
    for key in [*ks, GROUND_TRUTH]:
        k = 0 if key == GROUND_TRUTH else key
        jobs[key] = generation_job_start(
            project=project,
            prompt_set=imported.prompt_set,
            teacher=teacher,
            overrides={"top_logprobs": k},
            created_by=user,
        )
    for k in sampled_ks:
        jobs[f"sampled top-{k}"] = generation_job_start(
            project=project,
            prompt_set=imported.prompt_set,
            teacher=teacher,
            samples_per_prompt=args.samples,
            overrides={"top_logprobs": k, "temperature": args.sample_temperature, "seed": 1},
            created_by=user,
        )
    BROKER.drain()  # generation jobs, then the filter run each finished job sends
    for job in jobs.values():
        job.refresh_from_db()
        assert job.status == RunStatus.SUCCEEDED, job.message
    stats_line = teacher_stats(jobs[sft_k] if ks else jobs[GROUND_TRUTH])
    print(stats_line, flush=True)

    # 3. Review, then one dataset version per job.
    keep_wrong = tuple(jobs[f"sampled top-{k}"] for k in sampled_ks)
    for job in keep_wrong:
        texts = list(job.completions.values_list("prompt__reference", "text"))
        print(
            f"sampled job {job.pk} ({args.samples} per prompt, temperature "
            f"{args.sample_temperature}): {len(texts)} answers, "
            f"{sum(r != t for r, t in texts)} wrong, "
            f"{len(set(texts))} distinct (prompt, answer) pairs",
            flush=True,
        )
    print(f"review: {review_all(project, user, jobs[GROUND_TRUTH], keep_wrong)}", flush=True)
    versions: dict[Any, DatasetVersion] = {}
    for key, job in jobs.items():
        dataset = dataset_create(project=project, name=version_name(key), user=user)
        versions[key] = dataset_version_build(dataset=dataset, recipe={"jobs": [job.pk]}, user=user)
    BROKER.drain()
    for version in versions.values():
        version.refresh_from_db()
        assert version.status == RunStatus.SUCCEEDED, version.message
        c = version.counts
        print(
            f"  version {version.pk} ({version.dataset.name}): {c.get('train')} train rows, kd rows "
            f"{c.get('kd_rows')}, teacher-exact {c.get('teacher_exact')}, sources {c.get('sources')}",
            flush=True,
        )

    # 4. Training runs: same prompts, steps, batch and learning rate; seeds pair up.
    runs: dict[int, tuple[str, int]] = {}
    for seed in range(args.seeds):
        for name in names:
            k = top_k_of(name, vocab)
            method = "kd" if k is not None else "sft"
            version = versions[version_key(name, k, max_k, sft_k)]
            temperature = temperature_of(name, args.temperature)
            run = training_run_launch(
                project=project,
                user=user,
                dataset_version_id=version.pk,
                base_model_id=bases[seed].pk,
                method=method,
                config={
                    **COMMON,
                    "learning_rate": args.student_lr,
                    "max_steps": args.student_steps,
                    "seed": seed,
                    "temperature": temperature,
                    "alpha": alpha_of(name, args.alpha),
                },
            )
            runs[run.pk] = (name, seed)
    times: dict[str, float] = dict.fromkeys(names, 0.0)

    def trained(t: Task, _result: Any, secs: float) -> None:
        name, seed = runs[t.args[0]]
        times[name] += secs
        run = TrainingRun.objects.get(pk=t.args[0])
        loss = (run.result or {}).get("train_loss")
        print(f"  seed {seed} {name:10s} run {run.pk} {run.status} loss {loss} ({secs:.0f}s)")
        assert run.status == RunStatus.SUCCEEDED, (run.message, run.log_tail[-2000:])

    t0 = time.perf_counter()
    run_tasks(BROKER.take(TRAIN_TASK), workers=args.workers, on_done=trained)
    print(f"trained {len(runs)} students in {time.perf_counter() - t0:.0f}s", flush=True)

    # 5. Eval runs on the held-out eval set: the teacher, then each seed's students.
    eval_set = eval_set_from_heldout(project=project, user=user)
    decoding = {"temperature": 0.0, "max_tokens": args.length + 1}
    evals = [
        eval_run_create(
            project=project,
            models=[ModelChoice("teacher", teacher.pk)],
            eval_set_ids=[eval_set.pk],
            decoding=decoding,
            name="teacher",
            user=user,
        )
    ]
    for seed in range(args.seeds):
        mine = [pk for pk, (_n, s) in runs.items() if s == seed]
        for start in range(0, len(mine), MAX_MODELS):
            evals.append(
                eval_run_create(
                    project=project,
                    models=[
                        ModelChoice("student", pk, artifact="model")
                        for pk in mine[start : start + MAX_MODELS]
                    ],
                    eval_set_ids=[eval_set.pk],
                    decoding=decoding,
                    name=f"students, seed {seed}",
                    user=user,
                )
            )
    t0 = time.perf_counter()
    run_tasks(
        BROKER.take(EVAL_TASK),
        workers=args.workers,
        on_done=lambda t, result, secs: print(
            f"  eval run {t.args[0]}: {result} ({secs:.0f}s)", flush=True
        ),
    )
    print(f"evaluated in {time.perf_counter() - t0:.0f}s", flush=True)
    assert not BROKER.pending, BROKER.pending

    scores: dict[str, float] = {}
    for ev in EvalRun.objects.filter(pk__in=[e.pk for e in evals]):
        assert ev.status == RunStatus.SUCCEEDED, ev.message
        for key, row in ev.results["subsets"]["all"].items():
            scores[key] = row["overall"]["exact_match"]
        contaminated = ev.results.get("contamination", {}).get("contaminated")
        assert not contaminated, f"eval run {ev.pk}: {contaminated} contaminated items"
    teacher_acc = scores[f"teacher-{teacher.pk}"]
    results: dict[str, dict[int, float]] = {n: {} for n in names}
    for pk, (name, seed) in runs.items():
        results[name][seed] = scores[f"student-{pk}-model"]
    base_inspection = BaseModel.objects.get(pk=bases[0].pk).inspection
    summary = json.dumps(
        {"args": vars(args), "teacher": teacher_acc, "students": results}, indent=1
    )
    (work / "results.json").write_text(summary)
    if args.results:
        Path(args.results).write_text(summary)

    wall = time.perf_counter() - started
    print()
    print(
        f"sorting {args.length} of 15 letters; teacher {teacher_params:,} params, students "
        f"{student_params:,} ({student_params / teacher_params:.3f}x; inspection says "
        f"{base_inspection.get('parameters')}); {args.student_steps} steps x batch 32 on "
        f"{len(prompts)} prompts, lr {args.student_lr}; kd alpha {args.alpha}, T {args.temperature} "
        f"unless named; eval set of {eval_set.item_count} held-out problems (data seed "
        f"{args.data_seed})"
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
