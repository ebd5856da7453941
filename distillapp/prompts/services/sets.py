"""Deleting prompt sets."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.db.models import ProtectedError, RestrictedError

from distillapp.accounts.services import audit_record
from distillapp.projects.models import Project
from distillapp.prompts.models import Prompt, PromptSet


class PromptSetInUse(Exception):
    pass


_AFTER_SET_DELETE: list[Callable[[Project], None]] = []


def after_prompt_set_delete(callback: Callable[[Project], None]) -> None:
    """Let an app above this one fix what it keeps about the project once a set's prompts (and
    what cascaded from them) are gone; called inside the delete's transaction."""
    _AFTER_SET_DELETE.append(callback)


def prompt_set_delete(*, prompt_set: PromptSet, chunk: int = 5000, notify: bool = True) -> None:
    """Delete a prompt set with its prompts (and what cascades from them), in chunks so memory stays
    flat for sets of millions of prompts, then run the `after_prompt_set_delete` callbacks (not
    with `notify=False`: the project itself is being deleted). Idempotent: deleting an already
    deleted set does nothing."""
    project = Project.objects.select_related("org").filter(pk=prompt_set.project_id).first()
    try:
        with transaction.atomic():
            while True:
                ids = list(
                    Prompt.objects.filter(prompt_set_id=prompt_set.pk).values_list("pk", flat=True)[
                        :chunk
                    ]
                )
                if not ids:
                    break
                Prompt.objects.filter(pk__in=ids).delete()
            PromptSet.objects.filter(pk=prompt_set.pk).delete()
            if notify and project is not None:
                audit_record(
                    org=project.org,
                    actor=None,  # the user of the current request (see audit_record)
                    action="prompt_set.delete",
                    target=prompt_set.name,
                    details={"project": project.pk, "prompt_set": prompt_set.pk},
                )
                for callback in _AFTER_SET_DELETE:
                    callback(project)
    except (ProtectedError, RestrictedError) as exc:
        raise PromptSetInUse(
            "This prompt set is used by data that must be kept (e.g. a frozen dataset)."
        ) from exc


def prompt_sets_delete_for_project(*, project: Project) -> None:
    """Delete every prompt set of a project (before the project itself), each in chunks."""
    for prompt_set in PromptSet.objects.filter(project=project):
        prompt_set_delete(prompt_set=prompt_set, notify=False)
