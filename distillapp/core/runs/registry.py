"""Which kinds of run exist, which task runs each, and on which queue.

Each app registers its kinds in its `AppConfig.ready()`, so the sweep and the generic services find
every run without importing the apps above `core`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distillapp.core.queues import Queue

if TYPE_CHECKING:
    from distillapp.core.runs.models import Run


@dataclass(frozen=True)
class RunKind:
    name: str  # "generation", "filters", ...: used in logs and by the sweep's report
    model: type[Run]
    task: str  # the Celery task, by name, that takes the run's id
    queue: Callable[[Run], Queue]  # where a given run's task goes (a local model → gpu)


_KINDS: dict[type, RunKind] = {}


def register(kind: RunKind) -> None:
    _KINDS[kind.model] = kind


def kind_of(run: Run | type[Run]) -> RunKind:
    model = run if isinstance(run, type) else type(run)
    try:
        return _KINDS[model]
    except KeyError:
        raise LookupError(f"{model.__name__} is not a registered kind of run") from None


def kinds() -> list[RunKind]:
    return list(_KINDS.values())


# Pipelines between apps: an app above another reacts to the other's runs without the lower app
# importing it (a finished generation job starts the filters; generation never imports filters).
_ON_SUCCEEDED: dict[str, list[Callable[[Run], None]]] = {}


def on_succeeded(kind_name: str, callback: Callable[[Run], None]) -> None:
    """Call `callback(run)` in the transaction that ends a run of `kind_name` successfully."""
    _ON_SUCCEEDED.setdefault(kind_name, []).append(callback)


def notify_succeeded(run: Run) -> None:
    for callback in _ON_SUCCEEDED.get(kind_of(run).name, []):
        callback(run)
