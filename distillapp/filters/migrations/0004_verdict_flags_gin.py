"""A GIN index on CompletionVerdict.flags for the completions browser's `flag` filter
(`flags @> '["name"]'`), on PostgreSQL only: SQLite has no GIN and its JSON filter scans."""

from __future__ import annotations

from django.db import migrations

INDEX = "completionverdict_flags_gin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} "
            "ON filters_completionverdict USING gin (flags jsonb_path_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("filters", "0003_verdict_judge_error")]

    operations = [migrations.RunPython(create, drop)]
