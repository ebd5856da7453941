"""Building a dataset version: the run a worker executes (`workers.tasks.datasets`).

The build claims the version, streams the recipe's rows in batches (`selectors.RowBatches`), writes
every file under a temporary folder (`writer.VersionWriter`), tallies counts and the diff against
the parent as the batches go by, records the lineage (`lineage.version_lineage`), and renames the
folder into place only once the claim is still its own. A worker that takes over a dead one's
build first removes whatever the dead one left.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from distillapp.core.runs.models import RunStatus
from distillapp.core.runs.services import (
    ClaimLost,
    ClaimState,
    RunCancelled,
    run_claim,
    run_end,
    run_fail,
    run_heartbeat,
    run_progress,
)
from distillapp.datasets import exports, writer
from distillapp.datasets.batches import BatchCounts, RowBatch, dumps, value_counts
from distillapp.datasets.lineage import version_lineage
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.recipe import Recipe, recipe_parse
from distillapp.datasets.selectors import RowBatches
from distillapp.datasets.services import relative_folder, version_file, version_folder
from distillapp.generation.models import Completion, CompletionStatus, GenerationJob
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, Split
from distillapp.prompts.selectors import HeldOutPromptError, ensure_trainable

DIFF_EXAMPLES = 5
PROGRESS_SECONDS = 1.0
BATCH_ROWS = 10_000  # rows per batch of the build (memory: a few batches of raw rows and columns)


def dataset_version_execute(*, version_id: int) -> DatasetVersion | None:
    """Claim and build a version. Idempotent: a second delivery gets no claim; a worker that
    takes over a dead one's build removes its temporary folder and builds from the start; a
    succeeded version is never claimed again."""
    claim = run_claim(DatasetVersion, pk=version_id)
    if claim.state != ClaimState.CLAIMED or claim.run is None:
        return None
    version, token = claim.run, claim.token
    final = version_folder(version)
    tmp = final.with_name(f".{final.name}.tmp-{token}")
    try:
        result = _build(version=version, token=token, tmp=tmp, final=final)
    except ClaimLost:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    except RunCancelled:
        shutil.rmtree(tmp, ignore_errors=True)
        run_end(
            DatasetVersion,
            pk=version_id,
            token=token,
            status=RunStatus.CANCELLED,
            message="Cancelled.",
        )
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        run_fail(DatasetVersion, pk=version_id, token=token, message=f"{type(exc).__name__}: {exc}")
        raise
    else:
        try:
            run_end(
                DatasetVersion,
                pk=version_id,
                token=token,
                status=RunStatus.SUCCEEDED,
                message=f"Built {result['counts']['rows']:,} rows.",
                **result,
            )
        except ClaimLost:
            return None
    version.refresh_from_db()
    if version.status != RunStatus.SUCCEEDED:
        shutil.rmtree(final, ignore_errors=True)
    return version


def _clear_leftovers(final: Path) -> None:
    """Remove what earlier, dead attempts left: temporary folders, and a folder renamed into
    place by a worker that died before it could record success (nobody has seen it)."""
    if final.parent.is_dir():
        for leftover in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)


def _build(*, version: DatasetVersion, token: str, tmp: Path, final: Path) -> dict[str, Any]:
    project = Project.objects.get(pk=version.project_id)
    recipe = recipe_parse(version.recipe)
    _clear_leftovers(final)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    stats: Counter[str] = Counter()
    # On PostgreSQL the rows' query starts now, on a connection of its own (which then reads the
    # reviews for the lineage, while this one still writes).
    batches = RowBatches(
        project=project,
        recipe=recipe,
        stats=stats,
        batch_rows=BATCH_ROWS,
        after=lambda: _review_counts(project=project, recipe=recipe),
    )
    try:
        total = _candidates_bound(project=project, recipe=recipe)
        run_heartbeat(
            DatasetVersion,
            pk=version.pk,
            token=token,
            total=total,
            done=0,
            message="Selecting rows.",
        )
        hf = exports.hf_layout(cache=Path(settings.VAR_DIR) / "cache")
        parent = version.parent if version.parent_id else None
        parent_parquet = version_file(parent, "rows.parquet") if parent is not None else None
        tally = _Tally(
            writer.ParentRows(parent_parquet, examples=DIFF_EXAMPLES) if parent_parquet else None
        )
        out = writer.VersionWriter(tmp, hf=hf)
        try:
            reported = 0.0
            for batch in batches:
                _ensure_trainable(batch.prompt_ids)
                tally.add(batch, out.add(batch))
                # Progress (and a look for a cancel) at most every PROGRESS_SECONDS: each is a
                # commit, and commits wait on the disk the build is filling.
                if time.monotonic() - reported >= PROGRESS_SECONDS:
                    run_progress(
                        DatasetVersion,
                        pk=version.pk,
                        token=token,
                        done=min(stats["candidates"], total),
                        message=f"Wrote {out.rows:,} rows.",
                    )
                    reported = time.monotonic()
            sha256 = out.close()
            total = stats["candidates"]
            reviews = batches.after_rows()
        except BaseException:
            out.abort()
            raise
    finally:
        batches.close()

    # The data files are complete: hash them (two threads) while the rest is written.
    hashes = writer.FileHashes(
        [p for p in tmp.iterdir() if p.is_file() and p.name[0] != "." and p.name != writer.HF_ZIP]
    )
    try:
        try:
            diff = tally.diff(parent=parent, parent_parquet=parent_parquet)
            totals = {
                "rows": out.rows,
                **tally.counts(),
                "kd_rows": out.kd_rows,
                "prompt_chars": out.prompt_chars,
                "candidates": stats["candidates"],
                "dropped": {
                    k.removeprefix("dropped_"): v
                    for k, v in sorted(stats.items())
                    if k.startswith("dropped_")
                },
            }
            lineage = version_lineage(
                version=version,
                project=project,
                recipe=recipe,
                jobs_used=tally.jobs_used,
                verdicts=tally.verdicts,
                built_at=timezone.now(),
                parent=parent,
                reviews=reviews,
            )
            card = exports.dataset_card(
                title=f"{version.dataset.name} v{version.number}",
                sha256=sha256,
                counts=totals,
                lineage=lineage,
            )
            (tmp / "README.md").write_text(card, encoding="utf-8")
            if out.hf is not None:
                out.hf.finish(card)
        except BaseException:
            if out.hf is not None:
                out.hf.abort()
            raise
        manifest = {
            "dataset": version.dataset.name,
            "version": version.number,
            "sha256": sha256,
            "counts": totals,
            "lineage": lineage,
        }
        (tmp / "manifest.json").write_text(dumps(manifest), encoding="utf-8")
        files = writer.files_listing(tmp, hashes=hashes)
    finally:
        hashes.close()
    # Still ours? Only then make the folder visible.
    run_heartbeat(DatasetVersion, pk=version.pk, token=token, message="Publishing files.")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return {
        "sha256": sha256,
        "counts": totals,
        "lineage": lineage,
        "diff": diff,
        "files": files,
        "path": relative_folder(version),
        "done": total,
        "total": total,
    }


class _Tally:
    """What a build counts of its rows as the batches go by, and its diff against the parent."""

    KINDS = {writer.ADDED: "added", writer.UNCHANGED: "unchanged", writer.CHANGED: "changed"}

    def __init__(self, parent_rows: writer.ParentRows | None) -> None:
        self.parent_rows = parent_rows
        self.rows = BatchCounts()
        self.verdicts: Counter[str] = Counter()
        self.jobs_used: set[int] = set()
        self._diff = {"added": 0, "changed": 0, "removed": 0, "unchanged": 0}
        self._examples: dict[str, list[dict[str, Any]]] = {"added": [], "changed": []}

    def add(self, batch: RowBatch, shas: list[str]) -> None:
        n = len(batch)
        self.rows.add(batch)
        self.verdicts.update(value_counts(batch.verdict_state, empty="none"))
        self.jobs_used.update(np.unique(batch.job_id).tolist())
        prompt_id = batch.prompt_id
        if self.parent_rows is not None:
            kinds = self.parent_rows.match(prompt_id, batch.completion_id, shas)
        else:
            kinds = np.full(n, writer.ADDED, dtype=np.int8)
        for code, name in self.KINDS.items():
            where = np.flatnonzero(kinds == code)
            self._diff[name] += len(where)
            examples = self._examples.get(name)
            if examples is None:
                continue
            for i in where[: DIFF_EXAMPLES - len(examples)].tolist():
                messages = batch.messages_json[int(batch.prompt_index[i])].as_py()
                examples.append(
                    _example(
                        f"{prompt_id[i]}:{batch.completion_id[i]}",
                        json.loads(messages),
                        batch.target[i].as_py(),
                    )
                )

    def counts(self) -> dict[str, Any]:
        return self.rows.as_dict()

    def diff(self, *, parent: DatasetVersion | None, parent_parquet: Path | None) -> dict[str, Any]:
        diff: dict[str, Any] = dict(self._diff)
        examples: dict[str, list[dict[str, Any]]] = dict(self._examples)
        if self.parent_rows is not None and parent_parquet is not None:
            self.parent_rows.finish()
            diff["removed"] = self.parent_rows.removed
            old = writer.read_rows_by_key(parent_parquet, self.parent_rows.removed_examples)
            examples["removed"] = [
                _example(k, json.loads(r["messages"]), r["completion"]) for k, r in old.items()
            ]
            changed_keys = [e["key"] for e in examples["changed"]]
            before = writer.read_rows_by_key(parent_parquet, changed_keys)
            for e in examples["changed"]:
                if e["key"] in before:
                    e["before"] = before[e["key"]]["completion"][:300]
        diff["examples"] = examples
        diff["parent"] = (
            {"id": parent.pk, "number": parent.number, "sha256": parent.sha256} if parent else None
        )
        return diff


def _candidates_bound(*, project: Project, recipe: Recipe) -> int:
    """The recipe's jobs' completed completions: at least the candidates (progress shows
    candidates read against it; the build records the exact count when it ends). An index-only
    count, where counting the candidates themselves is the rows' whole join again."""
    jobs = GenerationJob.objects.filter(project=project)
    if recipe.jobs:
        jobs = jobs.filter(pk__in=recipe.jobs)
    job_ids = list(jobs.values_list("pk", flat=True))
    return Completion.objects.filter(job_id__in=job_ids, status=CompletionStatus.OK).count()


def _review_counts(*, project: Project, recipe: Recipe) -> list[tuple[int, str, str, int]]:
    """(job id, reviewer, decision, count) of every review of the recipe's jobs' completions."""
    from distillapp.review.models import Review

    jobs = GenerationJob.objects.filter(project=project)
    if recipe.jobs:
        jobs = jobs.filter(pk__in=recipe.jobs)
    return list(
        Review.objects.filter(completion__job__in=jobs)
        .values_list("completion__job_id", "reviewer__username", "decision")
        .annotate(n=Count("id"))
        .order_by("reviewer__username", "decision", "completion__job_id")
    )


def _ensure_trainable(prompt_ids: np.ndarray) -> None:
    """`prompts.selectors.ensure_trainable` for a batch's prompts. On PostgreSQL in one query:
    the held-out prompts of the ids' range when it is dense (an index range scan), else the ids
    as one array (the helper sends lists of 5,000 parameters)."""
    if connection.vendor != "postgresql":
        ensure_trainable(prompt_ids.tolist())
        return
    table = Prompt._meta.db_table
    low, high = int(prompt_ids.min()), int(prompt_ids.max())
    with connection.cursor() as cursor:
        if high - low < 4 * len(prompt_ids):
            cursor.execute(
                f"SELECT id FROM {table} WHERE id BETWEEN %s AND %s AND split = %s",
                [low, high, Split.HELDOUT.value],
            )
            heldout = np.array([r[0] for r in cursor.fetchall()], dtype=np.int64)
            leaked = int(np.isin(prompt_ids, heldout).sum())
        else:
            cursor.execute(
                f"SELECT count(*) FROM {table} WHERE id = ANY(%s) AND split = %s",
                [prompt_ids.tolist(), Split.HELDOUT.value],
            )
            (leaked,) = cursor.fetchone()
    if leaked:
        raise HeldOutPromptError(
            f"{leaked} held-out prompt(s) cannot be used for generation or training."
        )


def _example(key: str, messages: list[dict[str, str]], target: str) -> dict[str, Any]:
    prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return {"key": key, "prompt": prompt[:200], "completion": target[:300]}
