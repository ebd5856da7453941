from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """Celery queues. `gpu` workers run with `-c 1` per GPU; the others scale by hosts.

    The domain names the queue a run goes to (a local model needs a `gpu` worker); `workers.app`
    declares the same queues to Celery.
    """

    DEFAULT = "default"
    TEACHER = "teacher"
    GPU = "gpu"
