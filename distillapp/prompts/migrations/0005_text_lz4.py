"""PostgreSQL: compress long prompt texts with lz4 instead of pglz.

Prompts over ~2 kB are compressed as they are written; pglz was a measurable share of a large
import's database time and lz4 is several times faster to compress and to read back. Servers built
without lz4 keep pglz (the statement is tried in a savepoint). Existing rows keep their
compression until rewritten.
"""

from django.db import DatabaseError, migrations, transaction


def use_lz4(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic():
            schema_editor.execute(
                "ALTER TABLE prompts_prompt ALTER COLUMN text SET COMPRESSION lz4"
            )
    except DatabaseError:
        pass  # built without lz4: pglz stays


def use_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE prompts_prompt ALTER COLUMN text SET COMPRESSION default"
        )


class Migration(migrations.Migration):
    dependencies = [("prompts", "0004_lean_import_rows")]

    operations = [migrations.RunPython(use_lz4, use_default)]
