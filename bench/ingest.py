"""Prompt import benchmark: the real import service (COPY) against plain Django bulk_create.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/distillery .venv/bin/python bench/ingest.py [--rows N]

Generates an N-line JSONL file (prompts of 50-2000 characters, ~10 % chat format, ~30 % with
metadata, ~5 % with a reference, ~1 % exact duplicates) and a file of N/4 lines, creates a dedicated
database `distillery_bench_ingest` on the same server (dropped at the end), and imports each file in
a fresh subprocess per path so memory peaks are separate:
  - copy  N    prompt_set_import (duplicates dropped in Python, psycopg COPY straight into the
               prompts table), timed from the call until it returns after the commit, as a
               user's upload is
  - orm   N    the same parsing, validation and duplicate check, written with Django
               bulk_create (the baseline)
  - copy  N/4  to show memory does not grow with file size
The full-text search vectors are filled after the import by a task (workers.tasks.prompts); the
benchmark runs that task's service right after the big COPY import and prints its time on its own
line. Prints rows/s, the peak RSS growth during the import, and the ratios. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
BENCH_DB = "distillery_bench_ingest"

WORDS = [
    "explain",
    "summarise",
    "translate",
    "write",
    "compare",
    "list",
    "describe",
    "why",
    "how",
    "what",
    "when",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "for",
    "function",
    "python",
    "database",
    "query",
    "index",
    "latency",
    "model",
    "training",
    "dataset",
    "token",
    "gradient",
    "loss",
    "customer",
    "refund",
    "order",
    "invoice",
    "shipping",
    "delay",
    "policy",
    "contract",
    "clause",
    "tenant",
    "landlord",
    "recipe",
    "oven",
    "chicken",
    "garlic",
    "poem",
    "sonnet",
    "river",
    "mountain",
    "history",
    "empire",
    "revolution",
    "economy",
    "inflation",
    "interest",
    "rate",
    "physics",
    "energy",
    "momentum",
    "quantum",
    "chemistry",
    "molecule",
    "bond",
    "biology",
    "cell",
    "protein",
    "enzyme",
    "please",
    "step",
    "by",
    "step",
    "briefly",
    "in",
    "detail",
    "concise",
    "example",
    "code",
    "bug",
    "error",
    "stack",
    "trace",
    "kubernetes",
    "docker",
    "network",
    "packet",
    "router",
    "firewall",
    "security",
    "password",
    "encryption",
    "certificate",
    "email",
    "meeting",
    "agenda",
]
SOURCES = ["support", "forum", "docs", "synthetic", "sales"]


def _pool(rng: random.Random, size: int = 4_000_000) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        w = rng.choice(WORDS)
        words.append(w)
        length += len(w) + 1
    return " ".join(words)


def generate(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = _pool(rng)
    limit = len(pool) - 2100
    dumps = json.dumps
    previous: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            length = int(50 * (40 ** rng.random()))  # log-uniform 50..2000 characters
            start = rng.randrange(limit)
            text = f"Task {i}: " + pool[start : start + length]
            roll = rng.random()
            if previous and roll < 0.01:
                record: dict = {"prompt": rng.choice(previous)}
            elif roll < 0.11:
                record = {
                    "messages": [
                        {"role": "system", "content": "You are a careful assistant."},
                        {"role": "user", "content": text},
                    ]
                }
            else:
                record = {"prompt": text}
            if rng.random() < 0.3:
                record["source"] = rng.choice(SOURCES)
                record["difficulty"] = rng.randint(1, 5)
            if rng.random() < 0.05:
                record["reference"] = pool[start : start + 120]
            if i % 1000 == 0:
                previous.append(text)
            out.write(dumps(record) + "\n")


def _setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "distillapp.settings")
    import django

    django.setup()


def worker(path_kind: str, file: str, index: bool) -> None:
    """Runs in a subprocess: one import, then prints a JSON line with the figures."""
    _setup_django()
    from distillapp.accounts.models import Organization
    from distillapp.projects.models import Project
    from distillapp.prompts.services import prompt_set_import, prompt_set_index_search

    org, _ = Organization.objects.get_or_create(name="Bench")
    project = Project.objects.create(org=org, name=f"bench {path_kind} {time.time_ns()}")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backend_cpu = _backend_cpu_reader()
    pg_cpu0, py_cpu0 = backend_cpu(), time.process_time()
    started = time.perf_counter()
    result = prompt_set_import(
        project=project,
        file=file,
        name=Path(file).name,
        heldout_fraction=0.1,
        seed=1,
        use_copy=path_kind == "copy",
    )
    seconds = time.perf_counter() - started
    py_cpu, pg_cpu = time.process_time() - py_cpu0, backend_cpu() - pg_cpu0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index_seconds = None
    if index:
        # What the worker task does after the commit (enqueued by the import; run here inline).
        t0 = time.perf_counter()
        prompt_set_index_search(prompt_set=result.prompt_set)
        index_seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "index_seconds": index_seconds,
                "python_cpu": py_cpu,
                "postgres_cpu": pg_cpu,
                "seconds": seconds,
                "imported": result.imported,
                "duplicates": result.duplicates_dropped,
                "heldout": result.heldout,
                "peak_rss_growth_mib": (rss_after - rss_before) / 1024,
                "peak_rss_mib": rss_after / 1024,
            }
        )
    )


def _backend_cpu_reader():
    """CPU seconds used so far by this connection's PostgreSQL backend, read from /proc when the
    server runs on this machine (NaN otherwise): shows which side of the COPY is the bottleneck."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    stat = Path(f"/proc/{pid}/stat")

    def read() -> float:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return read


def _run(env: dict[str, str], path_kind: str, file: Path, index: bool) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", path_kind, "--file", str(file)]
        + (["--index"] if index else []),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _admin(url: str, sql: str, database: str = "postgres") -> None:
    import psycopg

    parsed = urlparse(url)
    admin_url = urlunparse(parsed._replace(path=f"/{database}"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--worker", choices=["copy", "orm"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--skip-orm", action="store_true", help="skip the bulk_create baseline")
    parser.add_argument("--index", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.file, args.index)
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit(
            "Set DATABASE_URL to a PostgreSQL server (the benchmark creates and drops distillery_bench)."
        )
    bench_url = urlunparse(urlparse(url)._replace(path=f"/{BENCH_DB}"))
    env = {**os.environ, "DATABASE_URL": bench_url}
    env.setdefault("DISTILLERY_UPLOAD_MAX_BYTES", str(64 * 1024**3))
    _admin(url, f"DROP DATABASE IF EXISTS {BENCH_DB}")
    _admin(url, f"CREATE DATABASE {BENCH_DB}")
    try:
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], env=env, check=True
        )
        with tempfile.TemporaryDirectory(prefix="distillery-bench-") as tmp:
            big, small = Path(tmp) / "prompts.jsonl", Path(tmp) / "prompts-small.jsonl"
            small_rows = max(args.rows // 4, 1)
            t0 = time.perf_counter()
            generate(big, args.rows, seed=7)
            generate(small, small_rows, seed=8)
            print(
                f"generated {args.rows:,} rows ({big.stat().st_size / 2**20:,.0f} MiB) and {small_rows:,} rows "
                f"({small.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.1f}s"
            )
            results = {}
            plan = [("copy", big, args.rows), ("copy", small, small_rows)]
            if not args.skip_orm:
                plan.insert(1, ("orm", big, args.rows))
            for i, (kind, file, rows) in enumerate(plan):
                r = _run(env, kind, file, index=i == 0)
                results[(kind, rows)] = r
                label = "COPY (service)" if kind == "copy" else "bulk_create (baseline)"
                print(
                    f"{label:<24} {rows:>9,} rows  {r['seconds']:7.1f}s  {rows / r['seconds']:>9,.0f} rows/s  "
                    f"imported {r['imported']:,}, duplicates {r['duplicates']:,}, held-out {r['heldout']:,}  "
                    f"peak RSS growth {r['peak_rss_growth_mib']:.1f} MiB (peak RSS {r['peak_rss_mib']:.0f} MiB)  "
                    f"CPU: Python {r['python_cpu']:.1f}s, PostgreSQL backend {r['postgres_cpu']:.1f}s"
                )
                if r["index_seconds"] is not None:
                    print(
                        f"{'deferred search indexing':<24} {r['imported']:>9,} rows  {r['index_seconds']:7.1f}s  "
                        f"{r['imported'] / r['index_seconds']:>9,.0f} rows/s  (task after the import's commit; "
                        f"import + indexing {r['seconds'] + r['index_seconds']:.1f}s)"
                    )
            copy_big = results[("copy", args.rows)]
            copy_small = results[("copy", small_rows)]
            if ("orm", args.rows) in results:
                orm = results[("orm", args.rows)]
                print(f"speed-up COPY vs bulk_create: {orm['seconds'] / copy_big['seconds']:.1f}x")
            print(
                f"memory: peak RSS growth {copy_big['peak_rss_growth_mib']:.1f} MiB for {args.rows:,} rows vs "
                f"{copy_small['peak_rss_growth_mib']:.1f} MiB for {small_rows:,} rows "
                f"(ratio {copy_big['peak_rss_growth_mib'] / max(copy_small['peak_rss_growth_mib'], 0.1):.2f} for 4x the rows)"
            )
    finally:
        _admin(url, f"DROP DATABASE IF EXISTS {BENCH_DB}")


if __name__ == "__main__":
    main()
