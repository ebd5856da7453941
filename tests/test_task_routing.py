"""Each task runs on the queue its module names: teacher.py → teacher, gpu.py → gpu, rest → default."""

from __future__ import annotations

from workers.app import app
from workers.queues import Queue


def _queue_of(task_name: str) -> str:
    route = app.amqp.router.route({}, task_name)
    return route["queue"].name


def test_every_project_task_routes_to_the_queue_of_its_module():
    names = [n for n in app.tasks if n.startswith("workers.tasks.")]
    assert {
        "workers.tasks.teacher.run_generation_job",
        "workers.tasks.gpu.run_local_generation_job",
    } <= set(names)
    for name in names:
        module = name.split(".")[2]
        expected = {"teacher": Queue.TEACHER, "gpu": Queue.GPU}.get(module, Queue.DEFAULT)
        assert _queue_of(name) == expected.value, name
