from __future__ import annotations

from django.urls import path

from distillapp.filters import views

urlpatterns = [
    path("projects/<int:project_id>/filters/", views.filtered_list, name="filters_list"),
    path("projects/<int:project_id>/filters/config/", views.filter_config, name="filters_config"),
    path("projects/<int:project_id>/filters/run/", views.filter_run, name="filters_run"),
    path(
        "projects/<int:project_id>/filters/progress/",
        views.filter_progress,
        name="filters_progress",
    ),
    path(
        "completions/<int:completion_id>/review/restore/",
        views.verdict_restore,
        name="verdict_restore",
    ),
    path(
        "completions/<int:completion_id>/review/unrestore/",
        views.verdict_unrestore,
        name="verdict_unrestore",
    ),
]
