from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from distillapp.api import api
from distillapp.core.views import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    # Browsers ask for /favicon.ico whatever the page says; point them at the SVG.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("api/v1/", api.urls),
    path("", include("distillapp.accounts.urls")),
    path("", include("distillapp.projects.urls")),
    path("", include("distillapp.prompts.urls")),
    path("", include("distillapp.generation.urls")),
    path("", include("distillapp.filters.urls")),
    path("", include("distillapp.review.urls")),
    path("", include("distillapp.datasets.urls")),
    path("", include("distillapp.training.urls")),
    path("", include("distillapp.evaluation.urls")),
]
