from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """Celery queues. `gpu` workers run with `-c 1` per GPU; the others scale by hosts."""

    DEFAULT = "default"
    TEACHER = "teacher"
    GPU = "gpu"
