"""Filter pipeline at scale: heuristics + exact + near duplicates over N completions in PostgreSQL,
through the real service (`filter_run_execute`). Not a timed test; prints figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/distillery \\
        .venv/bin/python bench/filters.py [--sizes 250000,1000000] [--baseline-inmemory 250000]

Creates (and drops first) its own database, `distillery_bench_filters` by default, on the server of
DATABASE_URL, and seeds one project per size with INSERT … SELECT generate_series: 2 samples per
prompt, ~300-character answers, 2 % exact copies and 2 % near copies of other prompts' answers.
Each measurement runs in a fresh process so its peak RSS (VmHWM) is its own; "growth" is the peak
minus the RSS after Django and the pipeline's imports were loaded. The pipeline keeps what grows
with the number of completions in its scratch SQLite file (`distillapp.filters.dedup_store`), so
its RSS growth should be the same at every size; the file's size when the run deleted it is
printed too. Baselines in the same run: a plain ORM iteration of the same columns (rows/s), and
the old all-in-memory approach (every row in a list, then duplicates over all texts at once) at
`--baseline-inmemory` completions (peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCKS = 8  # md5 blocks per answer: ~300 characters


def _prepare_database(url: str, name: str) -> str:
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def _body(k: str) -> str:
    parts = " || ' ' || ".join(f"md5(({k}) * {i + 1} || 'x')" for i in range(BLOCKS))
    return f"'Answer ' || ({k}) || ': ' || {parts}"


def seed(n: int) -> int:
    """A project with n OK completions (n/2 prompts × 2 samples); returns its id."""
    from django.db import connection

    from bench.review_queue import _insert_select
    from distillapp.accounts.models import Organization
    from distillapp.generation.models import Completion, GenerationJob, Teacher
    from distillapp.projects.models import Project
    from distillapp.prompts.models import Prompt, PromptSet

    org = Organization.objects.create(name=f"Bench {n}")
    project = Project.objects.create(org=org, name=f"Bench {n}")
    teacher = Teacher.objects.create(project=project, name="t", kind="openai", model="m")
    prompt_set = PromptSet.objects.create(project=project, name="bench")
    job = GenerationJob.objects.create(
        project=project,
        prompt_set=prompt_set,
        teacher=teacher,
        samples_per_prompt=2,
        teacher_snapshot={"name": "t", "model": "m", "decoding": {"temperature": 0.7}},
    )
    prompts = (n + 1) // 2
    _insert_select(
        Prompt,
        {
            "project": str(project.pk),
            "prompt_set": str(prompt_set.pk),
            "position": "g",
            "messages": """jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || g))""",
            "text": "'Question ' || g || ' about ' || md5(g::text)",
            "text_hash": f"md5('{project.pk}q' || g)::uuid",
        },
        "generate_series(0, %s) AS g",
        [prompts - 1],
    )
    first = (
        Prompt.objects.filter(prompt_set=prompt_set).order_by("id").values_list("id", flat=True)[0]
    )
    # g: 0..n-1; prompt g/2, sample g%2. 2 % exact copies of an answer 7 before (another
    # prompt), 2 % near copies (an answer 9 before, with a few words more).
    k = "CASE WHEN mod(g, 50) = 0 THEN g - 7 WHEN mod(g, 50) = 1 THEN g - 9 ELSE g END"
    suffix = "CASE WHEN mod(g, 50) = 1 THEN ' (revised once)' ELSE '' END"
    _insert_select(
        Completion,
        {
            "job": str(job.pk),
            "prompt": f"{first} + g / 2",
            "sample_index": "mod(g, 2)",
            "status": "'ok'",
            "text": f"{_body(k)} || {suffix}",
            "finish_reason": "'stop'",
        },
        "generate_series(0, %s) AS g",
        [n - 1],
    )
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return project.pk


def _rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            values[key] = int(value.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def child(mode: str, project_id: int) -> None:
    """One measurement in a fresh process; prints a JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()
    import datasketch  # noqa: F401 - loaded before the baseline RSS is read
    import numpy  # noqa: F401

    from distillapp.filters import dedup, services
    from distillapp.filters.models import CompletionVerdict, FilterRun
    from distillapp.filters.scratch import ScratchDB
    from distillapp.filters.services.run_scratch import scratch_dir
    from distillapp.generation.models import Completion
    from distillapp.projects.models import Project

    project = Project.objects.get(pk=project_id)
    scope = Completion.objects.filter(job__project=project, status="ok")
    fields = ("id", "prompt_id", "text", "finish_reason", "prompt__text", "prompt__reference")
    fields += ("prompt__metadata",)
    start_rss, _ = _rss()
    t0 = time.perf_counter()
    out: dict = {"mode": mode}
    if mode == "pipeline":
        scratch_sizes = []
        delete = ScratchDB.close

        def close(self: ScratchDB) -> None:
            scratch_sizes.append(self.size())
            delete(self)

        ScratchDB.close = close
        run = FilterRun.objects.create(project=project)
        services.filter_run_execute(run_id=run.pk)
        run.refresh_from_db()
        out.update(rows=run.counts["total"], status=run.status, counts=run.counts)
        out["scratch_bytes"] = max(scratch_sizes)
        out["scratch_left"] = len(list(scratch_dir().glob(f"filter-run-{run.pk}-*")))
        out["verdicts"] = CompletionVerdict.objects.filter(project=project).count()
    elif mode == "orm":
        rows = 0
        for _row in scope.order_by("id").values_list(*fields).iterator(chunk_size=2000):
            rows += 1
        out["rows"] = rows
    elif mode == "inmemory":
        rows = list(scope.order_by("id").values_list(*fields))
        texts = [r[2] for r in rows if r[2].strip()]
        exact = dedup.exact_duplicate_groups(texts)
        near = dedup.near_duplicate_groups(texts)
        out.update(rows=len(rows), exact_groups=len(exact), near_groups=len(near))
    seconds = time.perf_counter() - t0
    _, peak = _rss()
    out.update(seconds=seconds, start_rss=start_rss, peak_growth=peak - start_rss)
    print("RESULT " + json.dumps(out), flush=True)


def _measure(mode: str, project_id: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(project_id)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250000,1000000")
    parser.add_argument("--baseline-inmemory", type=int, default=250_000)
    parser.add_argument("--db-name", default="distillery_bench_filters")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PROJECT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("bench/filters.py needs DATABASE_URL=postgres://…")
    os.environ["DATABASE_URL"] = _prepare_database(url, args.db_name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    projects = {}
    for n in sorted(set(sizes) | ({args.baseline_inmemory} - {0})):
        t0 = time.perf_counter()
        projects[n] = seed(n)
        print(f"seeded {n:,} completions in {time.perf_counter() - t0:.1f} s", flush=True)

    mb = 1024 * 1024
    results = {}
    for n in sizes:
        orm = _measure("orm", projects[n])
        pipe = _measure("pipeline", projects[n])
        results[n] = (orm, pipe)
        if pipe["status"] != "succeeded" or pipe["scratch_left"] or pipe["verdicts"] != n:
            print(f"WARNING at {n:,}: {pipe}", flush=True)
        c = pipe["counts"]["by_flag"]
        print(
            f"{n:>9,} completions: pipeline {pipe['rows'] / pipe['seconds']:8,.0f} rows/s "
            f"({pipe['seconds']:.1f} s), peak RSS growth {pipe['peak_growth'] / mb:7.1f} MiB "
            f"({pipe['peak_growth'] / n:.0f} B/completion), scratch file "
            f"{pipe['scratch_bytes'] / mb:.0f} MiB ({pipe['scratch_bytes'] / n:.0f} B/completion); "
            "plain ORM iteration "
            f"{orm['rows'] / orm['seconds']:8,.0f} rows/s, growth {orm['peak_growth'] / mb:.1f} MiB; "
            f"ratio pipeline/ORM {(pipe['rows'] / pipe['seconds']) / (orm['rows'] / orm['seconds']):.3f}; "
            f"flags {c}",
            flush=True,
        )
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        g_lo, g_hi = results[lo][1]["peak_growth"], results[hi][1]["peak_growth"]
        per_item = (g_hi - g_lo) / (hi - lo)
        print(
            f"peak RSS growth {lo:,} → {hi:,}: {g_lo / mb:.1f} → {g_hi / mb:.1f} MiB "
            f"({(g_hi - g_lo) / mb:+.1f} MiB); marginal {per_item:.1f} B per extra completion; "
            f"rows/s {results[lo][1]['rows'] / results[lo][1]['seconds']:,.0f} → "
            f"{results[hi][1]['rows'] / results[hi][1]['seconds']:,.0f}",
            flush=True,
        )
    if args.baseline_inmemory:
        n = args.baseline_inmemory
        old = _measure("inmemory", projects[n])
        print(
            f"baseline, old all-in-memory approach at {n:,}: {old['rows'] / old['seconds']:,.0f} rows/s "
            f"(rows + duplicates only, no heuristics), peak RSS growth {old['peak_growth'] / mb:.1f} MiB "
            f"({old['peak_growth'] / n:.0f} B/completion)",
            flush=True,
        )
        if n in results:
            new = results[n][1]["peak_growth"]
            print(f"ratio peak RSS growth old/new at {n:,}: {old['peak_growth'] / new:.1f}x")


if __name__ == "__main__":
    main()
