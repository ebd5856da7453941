from __future__ import annotations

from django.urls import path

from distillapp.training import views

urlpatterns = [
    path("projects/<int:project_id>/training/", views.training_list, name="training_list"),
    path(
        "projects/<int:project_id>/training/base-models/",
        views.base_model_add,
        name="base_model_add",
    ),
    path(
        "projects/<int:project_id>/training/new/", views.training_run_new, name="training_run_new"
    ),
    path(
        "projects/<int:project_id>/training/preview/",
        views.training_run_preview,
        name="training_run_preview",
    ),
    path("base-models/<int:base_model_id>/", views.base_model_detail, name="base_model_detail"),
    path(
        "base-models/<int:base_model_id>/inspect/",
        views.base_model_reinspect,
        name="base_model_reinspect",
    ),
    path(
        "base-models/<int:base_model_id>/delete/",
        views.base_model_delete,
        name="base_model_delete",
    ),
    path(
        "training-runs/<int:training_run_id>/",
        views.training_run_detail,
        name="training_run_detail",
    ),
    path(
        "training-runs/<int:training_run_id>/progress/",
        views.training_run_progress,
        name="training_run_progress",
    ),
    path(
        "training-runs/<int:training_run_id>/cancel/",
        views.training_run_cancel,
        name="training_run_cancel",
    ),
    path(
        "training-runs/<int:training_run_id>/resume/",
        views.training_run_resume,
        name="training_run_resume",
    ),
    path(
        "training-runs/<int:training_run_id>/quantize/",
        views.training_run_quantize,
        name="training_run_quantize",
    ),
    path(
        "training-runs/<int:training_run_id>/artifacts/<str:artifact_name>/download/",
        views.training_artifact_download,
        name="training_artifact_download",
    ),
]
