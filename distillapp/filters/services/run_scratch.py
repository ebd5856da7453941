"""Where a filter run keeps its scratch database (`$DISTILLERY_VAR_DIR/scratch/filters-<database>/`),
and the removal of the files a killed worker left behind."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import connection

from distillapp.core.runs.models import CLAIMED_STATUSES
from distillapp.filters.models import FilterRun
from distillapp.filters.scratch import ScratchDB

logger = logging.getLogger(__name__)

_NAME = re.compile(r"filter-run-(\d+)-[0-9A-Za-z]+\.sqlite3")


def scratch_dir() -> Path:
    """One folder per database: runs of two databases that share a var folder (tests beside a
    benchmark, say) never take each other's files for leftovers."""
    db = connection.settings_dict
    where = f"{connection.vendor}|{db.get('HOST')}|{db.get('PORT')}|{db['NAME']}"
    return (
        Path(settings.VAR_DIR)
        / "scratch"
        / f"filters-{hashlib.sha256(where.encode()).hexdigest()[:12]}"
    )


def run_scratch(run: FilterRun, token: str) -> ScratchDB:
    """A new, empty scratch database for this claim of the run (its own file: a worker that lost
    the claim and has not noticed yet keeps its file until it stops). The files of earlier
    claims of this run, and of runs no worker owns, are removed first: their workers were killed
    before they could delete them."""
    folder = scratch_dir()
    leftovers_remove(folder, current=run.pk)
    return ScratchDB(folder / f"filter-run-{run.pk}-{token}.sqlite3")


def leftovers_remove(folder: Path, *, current: int | None = None) -> list[Path]:
    """Remove the scratch files of run `current` and of runs that are not running (queued,
    ended or deleted); returns the removed paths. A running run's file is kept: it may be another
    worker's, alive."""
    found: dict[Path, int] = {}
    for path in folder.glob("filter-run-*.sqlite3") if folder.is_dir() else ():
        if match := _NAME.fullmatch(path.name):
            found[path] = int(match.group(1))
    if not found:
        return []
    running = set(
        FilterRun.objects.filter(
            pk__in=set(found.values()) - {current}, status__in=CLAIMED_STATUSES
        ).values_list("pk", flat=True)
    )
    removed = []
    for path, pk in found.items():
        if pk not in running:
            path.unlink(missing_ok=True)
            removed.append(path)
            logger.info("removed the scratch file %s of an earlier filter run", path.name)
    return removed
