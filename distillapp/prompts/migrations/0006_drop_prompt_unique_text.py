"""Drop the unique index on (project, text_hash).

The import drops duplicates itself, under the project's import lock, against every hash the
project has (Prompt's docstring). The index was only a guard, and the costliest one: a random
16-byte key, so each of a million inserts touched a random leaf page (about a third of the
database's CPU in the import benchmark, paid again by the search indexing's UPDATE). Migrating
back recreates it, which fails only if duplicates were stored meanwhile.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("prompts", "0005_text_lz4")]

    operations = [
        migrations.RemoveConstraint(model_name="prompt", name="prompt_unique_text_in_project"),
    ]
