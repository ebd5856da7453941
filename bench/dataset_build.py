"""Dataset build at scale: a version built from 1M approved completions (top-k on a third) on
PostgreSQL. Not a timed test; prints figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/distillery \\
        .venv/bin/python bench/dataset_build.py [--completions 1000000] [--reuse] [--explain]

Creates (and drops first) its own database, `distillery_bench_dataset` by default, on the server of
DATABASE_URL; seeds it with COPY (64 distinct DTK1 top-k records) and INSERT … SELECT
generate_series: one prompt set, job A with a quarter of the completions and job B with the rest,
two samples per prompt, every completion passed by the filters, approved by a review (5 % edited).

Each build runs in a child process of its own (a fresh worker: its first-use imports count), which
reports rows/s and its peak RSS growth over its start (sampled every 20 ms from /proc/self/statm):
  1. job A only (250k rows), 2. every job (1M rows, new dataset), 3. every job again as the next
  version of (2) (1M rows, with the diff against a 1M-row parent).
The build reads its rows with one binary COPY on a connection of its own (`datasets/pgstream.py`),
so the bench also times that statement alone, in a child that reads every row and drops it: what
PostgreSQL needs to produce the rows, a floor for the build. The naive baseline (ORM iteration
with select_related + json.dumps per row into one JSONL file) runs in a child too, over
`--baseline-rows` rows. Target: ≥ 100,000 rows/s and ≥ 5× the baseline.
`--explain` prints EXPLAIN ANALYZE of the completions browser's default page and common filters.
`--profile FILE` writes a cProfile of the 1M build's main thread (the reader, writer and hashing
threads are not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _prepare_database(url: str, name: str, reuse: bool) -> tuple[str, bool]:
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not (reuse and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}")), bool(reuse and exists)


def _blobs(n: int = 64) -> list[bytes]:
    import numpy as np

    from workers.engine import topk_format

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        t, k = 64, 8
        ids = rng.integers(0, 32000, size=t)
        alt = rng.integers(0, 32000, size=(t, k))
        alt[:, 0] = ids
        lps = np.sort(-rng.random((t, k)) * 5, axis=1)[:, ::-1].astype(np.float16)
        out.append(topk_format.encode(topk_format.TopkRecord(ids, alt, lps)))
    return out


def seed(n: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from bench.review_queue import _insert_select
    from distillapp.accounts.models import Membership, Organization, Role
    from distillapp.filters.models import CompletionVerdict
    from distillapp.generation.models import Completion, GenerationJob, Teacher
    from distillapp.projects.models import Project
    from distillapp.prompts.models import Prompt, PromptSet
    from distillapp.review.models import Review, ReviewItem

    user = get_user_model().objects.create(username="bench")
    org = Organization.objects.create(name="Bench")
    Membership.objects.create(user=user, org=org, role=Role.OWNER)
    project = Project.objects.create(
        org=org, name="Bench", created_by=user, settings={"license": "apache-2.0"}
    )
    teacher = Teacher.objects.create(project=project, name="t", kind="openai", model="m")
    prompt_set = PromptSet.objects.create(project=project, name="bench", sha256="ab" * 32)
    snap = {"name": "t", "model": "m", "decoding": {"temperature": 0.7}}
    job_a = GenerationJob.objects.create(
        project=project, prompt_set=prompt_set, teacher=teacher, samples_per_prompt=2,
        teacher_snapshot=snap,
    )  # fmt: skip
    job_b = GenerationJob.objects.create(
        project=project, prompt_set=prompt_set, teacher=teacher, samples_per_prompt=2,
        teacher_snapshot=snap,
    )  # fmt: skip
    prompts = n // 2
    quarter = prompts // 4
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("CREATE UNLOGGED TABLE bench_blob (i int PRIMARY KEY, b bytea)")
        with cur.copy("COPY bench_blob (i, b) FROM STDIN") as copy:
            for i, blob in enumerate(_blobs()):
                copy.write_row((i, blob))
    _insert_select(
        Prompt,
        {
            "project": str(project.pk),
            "prompt_set": str(prompt_set.pk),
            "position": "g",
            "messages": "jsonb_build_array(jsonb_build_object('role', 'system', 'content', "
            "'You are terse.'), jsonb_build_object('role', 'user', 'content', "
            "'Question ' || g || ': ' || md5(g::text)))",
            "text": "'Question ' || g || ': ' || md5(g::text)",
            "reference": "g::text",
            "text_hash": "md5('q' || g)::uuid",
        },
        f"generate_series(1, {prompts}) AS g",
    )
    _insert_select(
        Completion,
        {
            "job": f"CASE WHEN p.position <= {quarter} THEN {job_a.pk} ELSE {job_b.pk} END",
            "prompt": "p.id",
            "sample_index": "s",
            "status": "'ok'",
            "text": "'<think>' || repeat(md5(p.id::text || s), 4) || '</think>Answer ' "
            "|| p.position || '/' || s",
            "finish_reason": "'stop'",
            "prompt_tokens": "20",
            "completion_tokens": "64",
            "latency_ms": "900",
            "topk": "CASE WHEN mod(p.position * 2 + s, 3) = 0 THEN "
            "(SELECT b FROM bench_blob WHERE i = mod(p.position, 64)) END",
        },
        f"{Prompt._meta.db_table} p CROSS JOIN generate_series(0, 1) AS s "
        f"WHERE p.prompt_set_id = {prompt_set.pk}",
    )
    comp = Completion._meta.db_table
    _insert_select(
        CompletionVerdict,
        {
            "completion": "c.id",
            "project": str(project.pk),
            "state": "'passed'",
            "judge_score": "1 + mod(c.id * 7919, 10)",
        },
        f"{comp} c",
    )
    _insert_select(
        ReviewItem,
        {
            "completion": "c.id",
            "project": str(project.pk),
            "job": "c.job_id",
            "prompt": "c.prompt_id",
            "state": "'done'",
            "decision": "'approve'",
            "reviews_count": "1",
            "target_text": "CASE WHEN mod(c.id, 20) = 0 THEN 'Edited answer ' || c.id END",
            "decided_at": "now()",
        },
        f"{comp} c",
    )
    _insert_select(
        Review,
        {
            "completion": "c.id",
            "project": str(project.pk),
            "reviewer": str(user.pk),
            "decision": "CASE WHEN mod(c.id, 20) = 0 THEN 'edit' ELSE 'approve' END",
            "edited_text": "CASE WHEN mod(c.id, 20) = 0 THEN 'Edited answer ' || c.id END",
        },
        f"{comp} c",
    )
    with connection.cursor() as cur:
        cur.execute("DROP TABLE bench_blob")
        cur.execute("VACUUM ANALYZE")
    return {"seconds": time.perf_counter() - t0, "job_a": job_a.pk, "job_b": job_b.pk}


class PeakRSS:
    """Peak memory over the start, sampled from /proc/self/statm every 20 ms: resident (RSS) and
    anonymous (resident minus file-backed pages: what the process allocated, without the pages of
    memory-mapped files such as the Arrow streams the HF export reads, which are page cache)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> tuple[int, int]:
        with open("/proc/self/statm") as fh:
            fields = fh.read().split()
        resident, shared = int(fields[1]) * self.page, int(fields[2]) * self.page
        return resident, resident - shared

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = self._rss()
            self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        now = self._rss()
        self.peak = (max(self.peak[0], now[0]), max(self.peak[1], now[1]))
        self.anon_growth = self.peak[1] - self.start[1]
        return self.peak[0] - self.start[0]


def child_build(version_id: int, profile: str | None) -> dict:
    from distillapp.datasets.build import dataset_version_execute
    from distillapp.datasets.models import DatasetVersion

    DatasetVersion.objects.filter(pk=version_id).exists()  # connection open before timing
    rss = PeakRSS()
    cpu0 = os.times()
    t0 = time.perf_counter()
    if profile:
        import cProfile

        cProfile.runctx(
            "dataset_version_execute(version_id=version_id)", globals(), locals(), profile
        )
    else:
        dataset_version_execute(version_id=version_id)
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    growth = rss.stop()
    anon = rss.anon_growth
    v = DatasetVersion.objects.get(pk=version_id)
    return {
        "status": v.status,
        "message": v.message,
        "rows": (v.counts or {}).get("rows", 0),
        "kd_rows": (v.counts or {}).get("kd_rows", 0),
        "seconds": seconds,
        # The build process's CPU time, all threads (PostgreSQL's is not in it).
        "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "rss_growth": growth,
        "anon_growth": anon,
        "diff": {k: v.diff.get(k) for k in ("added", "changed", "removed", "unchanged")},
        "sha256": v.sha256,
        "files": {k: f["bytes"] for k, f in (v.files or {}).items()},
    }


def child_query(project_id: int) -> dict:
    """The build's COPY statement for every job, alone: every row read (as the build's reader
    does) and dropped."""
    from django.db import connection

    from distillapp.datasets.pgstream import copy_sql
    from distillapp.datasets.recipe import recipe_parse
    from distillapp.projects.models import Project

    sql, params = copy_sql(project=Project.objects.get(pk=project_id), recipe=recipe_parse({}))
    t0 = time.perf_counter()
    rows = size = 0
    first = None
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
        with cursor.copy(sql, params) as copy:
            while data := copy.read():
                if first is None:
                    first = time.perf_counter() - t0
                rows += 1
                size += len(data)
    return {"rows": rows - 1, "bytes": size, "first": first, "seconds": time.perf_counter() - t0}


def child_preview(project_id: int) -> dict:
    """The build form's live preview of the empty recipe (every job): what one form change costs."""
    from distillapp.datasets.recipe import recipe_parse
    from distillapp.datasets.selectors import recipe_preview
    from distillapp.projects.models import Project

    project = Project.objects.get(pk=project_id)
    t0 = time.perf_counter()
    preview = recipe_preview(project=project, recipe=recipe_parse({}))
    return {"rows": preview["rows"], "seconds": time.perf_counter() - t0}


def child_baseline(project_id: int, limit: int, out: str) -> dict:
    """The naive way: the ORM with select_related, one json.dumps per row."""
    from distillapp.generation.models import Completion
    from distillapp.prompts.models import chat_messages

    qs = (
        Completion.objects.filter(
            job__project_id=project_id,
            review_item__state="done",
            review_item__decision="approve",
            prompt__split="train",
        )
        .select_related("prompt", "review_item")
        .order_by("prompt_id", "id")
    )
    rss = PeakRSS()
    t0 = time.perf_counter()
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for c in qs[:limit].iterator(chunk_size=2000):
            target = c.review_item.target_text or c.text
            messages = chat_messages(c.prompt.messages, c.prompt.text)
            record = {
                "messages": [*messages, {"role": "assistant", "content": target}],
                "topk": bytes(c.topk).hex() if c.topk is not None and not c.review_item.target_text else None,
            }  # fmt: skip
            fh.write(json.dumps(record) + "\n")
            n += 1
    growth = rss.stop()
    return {"rows": n, "seconds": time.perf_counter() - t0, "rss_growth": growth}


def explain(project) -> None:
    from django.contrib.auth import get_user_model

    from distillapp.datasets.completions_selectors import (
        CompletionFilters,
        completions_page,
        completions_queryset,
    )
    from distillapp.generation.models import GenerationJob

    job = GenerationJob.objects.filter(project=project).order_by("id").first()
    reviewer = get_user_model().objects.get(username="bench")
    cases = {
        "default page": CompletionFilters(),
        "job A": CompletionFilters(job=job.pk if job else None),
        "review=edited": CompletionFilters(review="edited"),
        "judge score >= 10": CompletionFilters(score_min=10),
        "reviewer": CompletionFilters(reviewer=reviewer.pk),
        "q=rare word (one match)": CompletionFilters(q="4a8a08f09d37b73795649038408b5f33"),
        "q=common word": CompletionFilters(q="answer"),
        # Every seeded completion passed: a rare flag, answered from the GIN index on flags.
        "flag=near_duplicate (no match)": CompletionFilters(flag="near_duplicate"),
    }
    for name, filters in cases.items():
        t0 = time.perf_counter()
        page = completions_page(project=project, filters=filters)
        ms = (time.perf_counter() - t0) * 1000
        second = None
        if page.next_cursor:
            t1 = time.perf_counter()
            completions_page(project=project, filters=filters, cursor=page.next_cursor)
            second = (time.perf_counter() - t1) * 1000
        print(
            f"\n== {name}: {len(page.items)} rows, page 1 {ms:.1f} ms"
            + (f", page 2 {second:.1f} ms" if second is not None else "")
        )
        qs = completions_queryset(project=project, filters=filters).order_by("-id")[:51]
        plan = qs.explain(analyze=True)
        print("\n".join(line for line in plan.splitlines() if "Planning" not in line))


def _child(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=os.environ.copy()
    )
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child {args} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--completions", type=int, default=1_000_000)
    parser.add_argument("--baseline-rows", type=int, default=200_000)
    parser.add_argument("--db-name", default="distillery_bench_dataset")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--only-full", action="store_true", help="skip the 250k and diff builds")
    parser.add_argument("--skip-diff", action="store_true", help="skip the third build")
    parser.add_argument("--profile", default="", help="cProfile output of the full build")
    parser.add_argument("--child-build", type=int)
    parser.add_argument("--child-baseline", type=int)
    parser.add_argument("--child-query", type=int)
    parser.add_argument("--child-preview", type=int)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/dataset_build.py needs DATABASE_URL=postgres://…")
    child = any(
        c is not None
        for c in (args.child_build, args.child_baseline, args.child_query, args.child_preview)
    )
    if child:
        os.environ["DATABASE_URL"] = urlunparse(urlparse(url)._replace(path=f"/{args.db_name}"))
        reused = True
    else:
        os.environ["DATABASE_URL"], reused = _prepare_database(url, args.db_name, args.reuse)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()
    if args.child_build is not None:
        print(json.dumps(child_build(args.child_build, args.profile or None)))
        return
    if args.child_baseline is not None:
        print(json.dumps(child_baseline(args.child_baseline, args.baseline_rows, args.out)))
        return
    if args.child_query is not None:
        print(json.dumps(child_query(args.child_query)))
        return
    if args.child_preview is not None:
        print(json.dumps(child_preview(args.child_preview)))
        return

    import tempfile

    from django.conf import settings
    from django.core.management import call_command

    from distillapp.datasets.models import DatasetVersion
    from distillapp.datasets.services import dataset_create, dataset_version_build
    from distillapp.generation.models import GenerationJob
    from distillapp.projects.models import Project

    call_command("migrate", verbosity=0)
    if reused:
        project = Project.objects.get(name="Bench")
        jobs = list(GenerationJob.objects.filter(project=project).order_by("id"))
        info = {"job_a": jobs[0].pk, "job_b": jobs[1].pk}
        print(f"reused {args.db_name}")
    else:
        info = seed(args.completions)
        project = Project.objects.get(name="Bench")
        print(f"seeded {args.completions:,} approved completions in {info['seconds']:.1f} s")
    if args.explain:
        explain(project)
        return

    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="bench")
    media = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    os.environ["DISTILLERY_MEDIA_ROOT"] = str(media)
    settings.MEDIA_ROOT = media
    stamp = int(time.time())

    def build(name: str, recipe: dict, dataset=None) -> dict:
        dataset = dataset or dataset_create(project=project, name=f"{name} {stamp}", user=user)
        version = dataset_version_build(dataset=dataset, recipe=recipe, user=user)
        extra = ["--profile", args.profile] if args.profile and "1M" in name else []
        result = _child(["--db-name", args.db_name, "--child-build", str(version.pk), *extra])
        result["dataset"] = dataset
        if result["status"] != "succeeded":
            raise SystemExit(f"{name}: {result['message']}")
        rate = result["rows"] / result["seconds"]
        print(
            f"{name:<28} {result['rows']:>9,} rows  {result['seconds']:6.1f} s  "
            f"{rate:>9,.0f} rows/s  CPU {result['cpu']:5.1f} s  peak RSS growth {result['rss_growth'] / 2**20:4.0f} MiB "
            f"(anonymous {result['anon_growth'] / 2**20:4.0f} MiB)  "
            f"kd rows {result['kd_rows']:,}  diff {result['diff']}"
        )
        return result

    print(f"DISTILLERY_MEDIA_ROOT={media}")
    results = {}
    if not args.only_full:
        results["250k"] = build("build 250k (job A)", {"jobs": [info["job_a"]]})
    results["1M"] = build("build 1M (every job)", {})
    if not (args.only_full or args.skip_diff):
        results["1M+diff"] = build(
            "build 1M, parent 1M (diff)", {}, dataset=results["1M"]["dataset"]
        )
        assert results["1M+diff"]["sha256"] == results["1M"]["sha256"]
    print("files of the 1M version:", json.dumps(results["1M"]["files"]))
    query = _child(["--db-name", args.db_name, "--child-query", str(project.pk)])
    print(
        f"PostgreSQL alone (the build's COPY, rows read and dropped) {query['rows']:>9,} rows  "
        f"{query['seconds']:6.1f} s  {query['rows'] / query['seconds']:>9,.0f} rows/s  "
        f"first row after {query['first']:.1f} s, {query['bytes'] / 2**20:,.0f} MiB"
    )
    preview = _child(["--db-name", args.db_name, "--child-preview", str(project.pk)])
    print(
        f"build form preview (empty recipe) {preview['rows']:>9,} rows  "
        f"{preview['seconds']:6.1f} s per form change"
    )
    base = _child(
        ["--db-name", args.db_name, "--child-baseline", str(project.pk),
         "--baseline-rows", str(args.baseline_rows), "--out", str(media / "naive.jsonl")]
    )  # fmt: skip
    base_rate = base["rows"] / base["seconds"]
    full_rate = results["1M"]["rows"] / results["1M"]["seconds"]
    print(
        f"naive baseline (ORM + json.dumps) {base['rows']:>9,} rows  {base['seconds']:6.1f} s  "
        f"{base_rate:>9,.0f} rows/s  peak RSS growth {base['rss_growth'] / 2**20:6.0f} MiB"
    )
    print(
        f"1M build: {full_rate:,.0f} rows/s = {full_rate / base_rate:.1f}x the naive baseline "
        f"(target >= 100,000 rows/s and >= 5x)"
    )
    n = DatasetVersion.objects.filter(dataset__project=project).count()
    print(f"{n} versions built; files under {media} (remove when done)")


if __name__ == "__main__":
    main()
