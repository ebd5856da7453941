"""Authorisation for completions, which reach their project through their job."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from distillapp.accounts.access import membership_for, require_role
from distillapp.accounts.models import Membership, Role
from distillapp.generation.models import Completion


def get_completion_for_user(
    user: Any, completion_id: int, role: str = Role.VIEWER
) -> tuple[Any, Membership]:
    """A completion (with its job, project and prompt) checked against the user's role.

    Completions reach their project through their job, so get_scoped_object does not fit them.
    """
    completion = (
        Completion.objects.select_related("job__project__org", "prompt")
        .filter(pk=completion_id)
        .first()
    )
    if completion is None:
        raise Http404("Not found.")
    membership = require_role(membership_for(user, completion.job.project.org_id), role)
    return completion, membership
