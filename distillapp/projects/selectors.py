from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet

from distillapp.projects.models import Project


def projects_for_user(user: Any, org_id: int | None = None) -> QuerySet[Project]:
    qs = Project.objects.filter(org__memberships__user=user).select_related("org")
    if org_id is not None:
        qs = qs.filter(org_id=org_id)
    return qs.annotate(prompt_set_count=Count("prompt_sets", distinct=True)).order_by("name")
