"""Review queue under load: N completions in PostgreSQL, R concurrent reviewers claiming and deciding
through the services (review_claim_next / review_decide). Not a timed test; prints figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/distillery \\
        .venv/bin/python bench/review_queue.py [--completions 1000000] [--reviewers 16] [--per-reviewer 200]

Creates (and drops first) its own database, `distillery_bench_review` by default, on the server of
DATABASE_URL; seeds with INSERT … SELECT generate_series. Each reviewer is a process of its own (fork)
with its own connection, as each person is served by a web worker. `--reuse` keeps a database an
earlier run seeded (its reviewed items stay reviewed) to iterate on the services quickly.
Prints p50/p95 of claim and decide, the same with one reviewer as the baseline, their ratio, and how
many items were handed out twice (must be 0). Target: p95 ≤ 50 ms each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _prepare_database(url: str, name: str, reuse: bool) -> tuple[str, bool]:
    """The bench database's URL, and whether an earlier run's database was kept."""
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not (reuse and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}")), bool(reuse and exists)


def _insert_select(
    model, overrides: dict[str, str], source: str, params: list | None = None
) -> int:
    """INSERT INTO model's table (every column) SELECT overrides-or-field-defaults FROM source.

    Columns other engineers add later get their Django default, so the seed keeps working."""
    from django.db import connection, models

    cols, exprs, values = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        cols.append(f'"{field.column}"')
        if field.name in overrides or field.column in overrides:
            exprs.append(overrides.get(field.name, overrides.get(field.column)))
            continue
        if isinstance(field, models.DateTimeField) and (field.auto_now or field.auto_now_add):
            exprs.append("now()")
            continue
        default = field.get_default()
        if default is None and field.null:
            exprs.append("NULL")
            continue
        exprs.append("%s")
        values.append(field.get_db_prep_save(default, connection))
    sql = f'INSERT INTO "{model._meta.db_table}" ({", ".join(cols)}) SELECT {", ".join(exprs)} FROM {source}'
    with connection.cursor() as cur:
        cur.execute(sql, values + list(params or []))
        return cur.rowcount


def seed(n: int, reviewers: int) -> tuple:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from distillapp.accounts.models import Membership, Organization, Role
    from distillapp.filters.models import CompletionVerdict
    from distillapp.generation.models import Completion, GenerationJob, Teacher
    from distillapp.projects.models import Project
    from distillapp.prompts.models import Prompt, PromptSet
    from distillapp.review.models import ReviewItem

    user_model = get_user_model()
    org = Organization.objects.create(name="Bench")
    users = []
    for i in range(reviewers):
        user = user_model.objects.create(username=f"reviewer{i}")
        Membership.objects.create(user=user, org=org, role=Role.REVIEWER)
        users.append(user)
    project = Project.objects.create(
        org=org, name="Bench", settings={"review": {"overlap": 1, "order": "uncertain"}}
    )
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
    t0 = time.perf_counter()
    _insert_select(
        Prompt,
        {
            "project": str(project.pk),
            "prompt_set": str(prompt_set.pk),
            "position": "g",
            "messages": """jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Question ' || g))""",
            "text": "'Question ' || g",
            "text_hash": "md5('q' || g)::uuid",
        },
        "generate_series(1, %s) AS g",
        [prompts],
    )
    _insert_select(
        Completion,
        {
            "job": str(job.pk),
            "prompt": "p.id",
            "sample_index": "s",
            "status": "'ok'",
            "text": "'Answer ' || p.position || '/' || s",
            "finish_reason": "'stop'",
            "mean_logprob": "-random() * 2",
        },
        f"{Prompt._meta.db_table} p CROSS JOIN generate_series(0, 1) AS s WHERE p.prompt_set_id = {prompt_set.pk} "
        f"AND (p.position < {prompts} OR s = 0 OR {n % 2} = 0)",
    )
    # 85 % passed with a judge score, 10 % filtered, 5 % never filtered.
    _insert_select(
        CompletionVerdict,
        {
            "completion": "c.id",
            "project": str(project.pk),
            "state": "CASE WHEN mod(c.id, 20) < 2 THEN 'filtered' ELSE 'passed' END",
            "flags": """CASE WHEN mod(c.id, 20) < 2 THEN '["too_long"]'::jsonb ELSE '[]'::jsonb END""",
            "judge_score": "1 + mod(c.id * 7919, 10)",
        },
        f"{Completion._meta.db_table} c WHERE c.job_id = {job.pk} AND mod(c.id, 20) <> 19",
    )
    seeded = time.perf_counter() - t0
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return project, users, job, seeded, ReviewItem


def _reviewer(
    project, user, seed: int, per_reviewer: int, think_s: float, barrier, results
) -> None:
    """One reviewer: its own process and database connection, as a web worker serving one person."""
    from django.db import connection

    from distillapp.review.services import review_claim_next, review_decide

    claims, decides, items = [], [], []
    error = None
    try:
        # One untimed claim and decision first: a web worker serving this person would have a
        # connection already open (CONN_MAX_AGE) and its caches warm from earlier requests.
        warm = review_claim_next(project=project, reviewer=user)
        if warm is not None:
            items.append(warm.pk)
            review_decide(completion=warm, reviewer=user, decision="approve", duration_ms=1)
        barrier.wait()
        for i in range(per_reviewer):
            t0 = time.perf_counter()
            completion = review_claim_next(project=project, reviewer=user)
            t1 = time.perf_counter()
            if completion is None:
                break
            items.append(completion.pk)
            if (i + seed) % 5 == 0:
                review_decide(
                    completion=completion,
                    reviewer=user,
                    decision="reject",
                    reason="Unhelpful",
                    duration_ms=1,
                )
            else:
                review_decide(
                    completion=completion, reviewer=user, decision="approve", duration_ms=1
                )
            t2 = time.perf_counter()
            claims.append(t1 - t0)
            decides.append(t2 - t1)
            if think_s:
                # A person reads the item before deciding: uniform in [0.5, 1.5] × think time.
                time.sleep(think_s * (0.5 + ((i * 7919 + seed * 104729) % 1000) / 1000))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        error = repr(exc)
    finally:
        connection.close()
        results.put((claims, decides, items, error))


def run(project, users, per_reviewer: int, think_s: float = 0.0) -> dict:
    """Reviewers as separate processes (fork), so their Python work runs in parallel as it would in
    several web workers; threads would share one interpreter lock and measure that instead."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # a forked child must never reuse the parent's socket
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(users))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_reviewer, args=(project, u, i, per_reviewer, think_s, barrier, results))
        for i, u in enumerate(users)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    claims: list[float] = []
    decides: list[float] = []
    handed: list[int] = []
    errors: list[str] = []
    for _ in procs:
        c, d, items, error = results.get()
        claims.extend(c)
        decides.extend(d)
        handed.extend(items)
        if error:
            errors.append(error)
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    if errors:
        raise RuntimeError(errors[0])
    twice = sum(1 for _c, k in Counter(handed).items() if k > 1)
    return {
        "n": len(claims),
        "claim_p50": _pct(claims, 0.5) * 1000,
        "claim_p95": _pct(claims, 0.95) * 1000,
        "decide_p50": _pct(decides, 0.5) * 1000,
        "decide_p95": _pct(decides, 0.95) * 1000,
        "twice": twice,
        "throughput": len(claims) / wall if wall else 0.0,
        "mean": statistics.fmean(c + d for c, d in zip(claims, decides, strict=True)) * 1000
        if claims
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--completions", type=int, default=1_000_000)
    parser.add_argument("--reviewers", type=int, default=16)
    parser.add_argument("--per-reviewer", type=int, default=200)
    parser.add_argument(
        "--think-ms",
        type=int,
        default=1000,
        help="a third run with this pause between a reviewer's decisions (human pace)",
    )
    parser.add_argument("--db-name", default="distillery_bench_review")
    parser.add_argument(
        "--skip-sync-timing", action="store_true", help="seed review items in SQL only"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="keep the database of an earlier run (no seeding)"
    )
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "bench/review_queue.py needs DATABASE_URL=postgres://… (SKIP LOCKED is PostgreSQL's)."
        )
    os.environ["DATABASE_URL"], reused = _prepare_database(url, args.db_name, args.reuse)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from distillapp.review.models import ReviewItem

    if reused:
        from django.contrib.auth import get_user_model

        from distillapp.projects.models import Project

        project = Project.objects.get(name="Bench")
        users = list(
            get_user_model().objects.filter(username__startswith="reviewer").order_by("id")
        )
        print(
            f"reused {args.db_name}: {ReviewItem.objects.filter(project=project).count():,} items"
        )
    else:
        project, users, _job, seeded, _ri = seed(args.completions, args.reviewers + 1)
        print(f"seeded {args.completions:,} completions (+ prompts, verdicts) in {seeded:.1f} s")

        from distillapp.review.services import review_queue_sync

        t0 = time.perf_counter()
        review_queue_sync(project=project, force=True)
        sync_s = time.perf_counter() - t0
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
        counts = Counter(
            ReviewItem.objects.filter(project=project).values_list("state", flat=True).iterator()
        )
        print(f"review_queue_sync (first, all items new): {sync_s:.1f} s → {dict(counts)}")

    baseline = run(project, users[-1:], args.per_reviewer)
    loaded = run(project, users[: args.reviewers], args.per_reviewer)
    paced = run(
        project, users[: args.reviewers], max(10, args.per_reviewer // 10), args.think_ms / 1000
    )

    def line(name: str, r: dict) -> str:
        return (
            f"{name:<14} n={r['n']:>5}  claim p50 {r['claim_p50']:6.1f} ms  p95 {r['claim_p95']:6.1f} ms   "
            f"decide p50 {r['decide_p50']:6.1f} ms  p95 {r['decide_p95']:6.1f} ms   "
            f"{r['throughput']:7.1f} items/s  handed out twice: {r['twice']}"
        )

    print(line("1 reviewer", baseline))
    print(line(f"{args.reviewers} reviewers", loaded) + "  (back to back: saturation)")
    print(line(f"{args.reviewers} paced", paced) + f"  ({args.think_ms} ms think time per item)")
    print(
        f"ratio {args.reviewers} vs 1: claim p95 ×{loaded['claim_p95'] / baseline['claim_p95']:.2f}, "
        f"decide p95 ×{loaded['decide_p95'] / baseline['decide_p95']:.2f}, "
        f"throughput ×{loaded['throughput'] / baseline['throughput']:.2f}"
    )
    from distillapp.review.models import Review

    with connection.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FROM (SELECT completion_id FROM {Review._meta.db_table} GROUP BY completion_id HAVING count(*) > 1) t"
        )
        dup = cur.fetchone()[0]
    print(f"items with more than one review in the database (overlap 1): {dup}")
    for name, r in (("back to back", loaded), ("human pace", paced)):
        ok = max(r["claim_p95"], r["decide_p95"]) <= 50 and r["twice"] == 0 and dup == 0
        print(f"target p95 ≤ 50 ms and no double hand-out, {name}:", "met" if ok else "NOT met")
    connection.close()


if __name__ == "__main__":
    main()
