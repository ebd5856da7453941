from __future__ import annotations

from django.urls import path

from distillapp.datasets import completions_views, views

urlpatterns = [
    path(
        "projects/<int:project_id>/completions/",
        completions_views.completion_list,
        name="completion_list",
    ),
    path(
        "completions/<int:completion_id>/",
        completions_views.completion_detail,
        name="completion_detail",
    ),
    path("projects/<int:project_id>/datasets/", views.dataset_list, name="dataset_list"),
    path("datasets/<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("datasets/<int:dataset_id>/preview/", views.dataset_preview, name="dataset_preview"),
    path("datasets/<int:dataset_id>/build/", views.dataset_build, name="dataset_build"),
    path(
        "dataset-versions/<int:version_id>/",
        views.dataset_version_detail,
        name="dataset_version_detail",
    ),
    path(
        "dataset-versions/<int:version_id>/progress/",
        views.dataset_version_progress,
        name="dataset_version_progress",
    ),
    path(
        "dataset-versions/<int:version_id>/download/",
        views.dataset_version_download,
        name="dataset_version_download",
    ),
    path(
        "dataset-versions/<int:version_id>/cancel/",
        views.dataset_version_cancel,
        name="dataset_version_cancel",
    ),
    path(
        "dataset-versions/<int:version_id>/resume/",
        views.dataset_version_resume,
        name="dataset_version_resume",
    ),
    path(
        "projects/<int:project_id>/datasets/license/",
        views.dataset_license,
        name="dataset_license",
    ),
    path(
        "dataset-versions/<int:version_id>/delete/",
        views.dataset_version_delete,
        name="dataset_version_delete",
    ),
]
