"""Leaner prompt rows for the import's COPY (see Prompt's docstring).

- `messages` may be NULL (a plain one-message prompt; existing rows keep their list, read through
  `Prompt.chat` either way).
- The foreign keys lose their database constraints (per-row trigger checks).
- `text_hash` becomes a UUID: the first 128 bits of the SHA-256 it already held, so existing
  prompts still deduplicate against new imports.
- PostgreSQL: the GIN indexes skip rows that have nothing to index (empty metadata, a search
  vector not yet filled), so an import does not write an entry per row into them.
"""

import django.db.models.deletion
from django.db import migrations, models

PG_FORWARD = [
    "DROP INDEX IF EXISTS prompt_metadata_gin",
    "CREATE INDEX prompt_metadata_gin ON prompts_prompt USING gin (metadata jsonb_path_ops)"
    " WHERE metadata <> '{}'::jsonb",
    "DROP INDEX IF EXISTS prompt_search_vector_gin",
    "CREATE INDEX prompt_search_vector_gin ON prompts_prompt USING gin (search_vector)"
    " WHERE search_vector IS NOT NULL",
]
PG_BACKWARD = [
    "DROP INDEX IF EXISTS prompt_metadata_gin",
    "CREATE INDEX prompt_metadata_gin ON prompts_prompt USING gin (metadata jsonb_path_ops)",
    "DROP INDEX IF EXISTS prompt_search_vector_gin",
    "CREATE INDEX prompt_search_vector_gin ON prompts_prompt USING gin (search_vector)",
]


def _run(schema_editor, statements):
    if schema_editor.connection.vendor == "postgresql":
        for sql in statements:
            schema_editor.execute(sql)


def truncate_hashes(apps, schema_editor):
    # 64 hex digits (or a UUID's text after a migration back) → the 32 a UUID holds; both
    # PostgreSQL and SQLite have replace and substr.
    schema_editor.execute(
        "UPDATE prompts_prompt SET text_hash = substr(replace(text_hash, '-', ''), 1, 32)"
        " WHERE length(text_hash) <> 32"
    )


def partial_indexes(apps, schema_editor):
    _run(schema_editor, PG_FORWARD)


def full_indexes(apps, schema_editor):
    _run(schema_editor, PG_BACKWARD)


def fill_messages(apps, schema_editor):
    schema_editor.execute(
        "UPDATE prompts_prompt SET messages = jsonb_build_array(jsonb_build_object("
        "'role', 'user', 'content', text)) WHERE messages IS NULL"
        if schema_editor.connection.vendor == "postgresql"
        else "UPDATE prompts_prompt SET messages = json_array(json_object("
        "'role', 'user', 'content', text)) WHERE messages IS NULL"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0001_initial"),
        ("prompts", "0003_search_vector"),
    ]

    operations = [
        migrations.AlterField(
            model_name="prompt",
            name="messages",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(migrations.RunPython.noop, fill_messages),
        migrations.AlterField(
            model_name="prompt",
            name="project",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="projects.project",
            ),
        ),
        migrations.AlterField(
            model_name="prompt",
            name="prompt_set",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="prompts",
                to="prompts.promptset",
            ),
        ),
        migrations.RunPython(truncate_hashes, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="prompt",
            name="text_hash",
            field=models.UUIDField(),
        ),
        migrations.RunPython(partial_indexes, full_indexes),
    ]
