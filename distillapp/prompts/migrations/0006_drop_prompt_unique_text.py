"""Drop the unique index on (project, text_hash).

The import drops duplicates itself, under the project's import lock, against every hash the
project has (Prompt's docstring). The index was only a guard, and the costliest one: a random
16-byte key, so each of a million inserts touched a random leaf page (about a third of the
database's CPU in the import benchmark, paid again by the search indexing's UPDATE). Migrating
back recreates it, which fails only if duplicates were stored meanwhile.

Without that index nothing indexes `project_id`, so the prompt's project link no longer cascades
by itself (Django's collector would scan the whole table): prompts go with their set, which
cascades from the project.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("prompts", "0005_text_lz4")]

    operations = [
        migrations.RemoveConstraint(model_name="prompt", name="prompt_unique_text_in_project"),
        migrations.AlterField(
            model_name="prompt",
            name="project",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="projects.project",
            ),
        ),
    ]
