"""Imports into one project take turns (PostgreSQL), and prompts go with their project even
though their foreign keys are not enforced by the database (see Prompt's docstring)."""

from __future__ import annotations

import threading

import psycopg
import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from distillapp.projects.services import project_delete
from distillapp.prompts.models import Prompt, PromptSet
from distillapp.prompts.services import IMPORT_LOCK_CLASS, prompt_set_import
from tests.conftest import USING_POSTGRES
from tests.factories import ProjectFactory
from tests.prompts.conftest import jsonl, upload


def _import(project, records, name):
    return prompt_set_import(
        project=project, file=upload(f"{name}.jsonl", jsonl(*records)), name=name, seed=1
    )


@pytest.mark.skipif(not USING_POSTGRES, reason="the import lock is a PostgreSQL advisory lock")
@pytest.mark.django_db(transaction=True)
def test_an_import_waits_while_another_import_holds_the_project(project):
    """A second import into a project waits for the first to finish (here: a session holding the
    project's import lock), then drops what the first stored as duplicates instead of failing."""
    _import(project, [{"prompt": "shared"}], "first")
    params = connection.get_connection_params()
    holder = psycopg.connect(
        **{k: v for k, v in params.items() if k in {"dbname", "user", "host", "port", "password"}}
    )
    key = [IMPORT_LOCK_CLASS, project.pk % 2**31]
    holder.execute("SELECT pg_advisory_lock(%s, %s)", key)
    done = threading.Event()
    outcome: dict = {}

    def second() -> None:
        try:
            outcome["result"] = _import(
                project, [{"prompt": "shared"}, {"prompt": "only second"}], "second"
            )
        except Exception as exc:  # surfaced by the assertions below
            outcome["error"] = exc
        finally:
            connections.close_all()
            done.set()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        assert not done.wait(1.5), "the second import did not wait for the project's lock"
        assert PromptSet.objects.filter(project=project).count() == 1
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", key)
        holder.close()
        thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert (outcome["result"].imported, outcome["result"].duplicates_dropped) == (1, 1)
    assert sorted(Prompt.objects.values_list("text", flat=True)) == ["only second", "shared"]


@pytest.mark.skipif(not USING_POSTGRES, reason="SQLite runs one write transaction at a time")
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_of_the_same_prompts_store_each_prompt_once(project):
    """The import lock is what keeps a project free of duplicates (there is no unique index): two
    imports of overlapping files started together store every text once between them."""
    records = [{"prompt": f"shared prompt {i}"} for i in range(300)]
    start = threading.Barrier(2)
    results: list = []
    errors: list = []

    def run(name: str, rows: list[dict]) -> None:
        try:
            start.wait(10)
            results.append(_import(project, rows, name))
        except Exception as exc:  # surfaced by the assertions below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=run, args=("a", records)),
        threading.Thread(target=run, args=("b", [*reversed(records), {"prompt": "only b"}])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(r.imported for r in results) in ([0, 301], [1, 300])
    texts = list(Prompt.objects.filter(project=project).values_list("text", flat=True))
    assert len(texts) == len(set(texts)) == 301


@pytest.mark.django_db
def test_deleting_a_project_deletes_its_sets_and_prompts(project, org):
    other_project = ProjectFactory(org=org)
    _import(project, [{"prompt": "a"}, {"prompt": "b"}], "mine")
    _import(other_project, [{"prompt": "a"}], "theirs")
    project_delete(project=project)
    assert list(Prompt.objects.values_list("project_id", flat=True)) == [other_project.pk]
    assert PromptSet.objects.filter(project_id=project.pk).count() == 0


@pytest.mark.django_db
def test_a_deleted_project_takes_its_prompts_through_its_sets_never_by_project_id(project, org):
    """Nothing indexes prompts_prompt.project_id, so a delete must never look prompts up by it
    (a scan of every project's prompts); a plain project.delete() still removes them."""
    other_project = ProjectFactory(org=org)
    _import(project, [{"prompt": "a"}, {"prompt": "b"}], "mine")
    _import(other_project, [{"prompt": "a"}], "theirs")
    with CaptureQueriesContext(connection) as queries:
        project.delete()
    by_project = [q["sql"] for q in queries if '"prompts_prompt"."project_id"' in q["sql"]]
    assert not by_project
    assert list(Prompt.objects.values_list("project_id", flat=True)) == [other_project.pk]


@pytest.mark.skipif(not USING_POSTGRES, reason="column compression is PostgreSQL's")
@pytest.mark.django_db
def test_long_prompt_texts_are_compressed_with_lz4():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attcompression FROM pg_attribute"
            " WHERE attrelid = 'prompts_prompt'::regclass AND attname = 'text'"
        )
        assert cursor.fetchone()[0] == "l"
