from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from distillapp.api import api
from distillapp.core.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", api.urls),
    path("", include("distillapp.accounts.urls")),
    path("", include("distillapp.projects.urls")),
    path("", include("distillapp.prompts.urls")),
    path("", include("distillapp.generation.urls")),
    path("", include("distillapp.filters.urls")),
    path("", include("distillapp.review.urls")),
]
