"""Indexes of the completions browser (PostgreSQL) on the completions table.

They live in this app because the browser (distillapp.datasets.completions_selectors) is their
only reader. `completion_job_id_desc` serves "one job, newest first" (the existing
(job, status, id) index gives id order only with a status too); `completion_text_fts` serves
full-text search, and its expression must match `completions_selectors.FTS_MATCH_SQL`.
SQLite searches by substring and gets neither.
"""

from django.db import migrations

INDEXES = {
    "completion_job_id_desc": "ON generation_completion (job_id, id)",
    "completion_text_fts": (
        "ON generation_completion USING gin (to_tsvector('english'::regconfig, text))"
    ),
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, spec in INDEXES.items():
            schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} {spec}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ("datasets", "0001_initial"),
        ("generation", "0003_generationjob_run_lifecycle"),
    ]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
