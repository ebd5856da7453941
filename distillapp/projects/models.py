from __future__ import annotations

from django.conf import settings as django_settings
from django.db import models

from distillapp.accounts.models import Organization


class Project(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=120)
    guidelines_md = models.TextField(blank=True, default="")
    settings = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        django_settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="project_unique_name_in_org")
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
