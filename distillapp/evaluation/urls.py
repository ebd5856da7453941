from __future__ import annotations

from django.urls import path

from distillapp.evaluation import run_views, views

urlpatterns = [
    path("projects/<int:project_id>/evaluation/add/", views.eval_set_add, name="eval_set_add"),
    path(
        "projects/<int:project_id>/evaluation/upload/",
        views.eval_set_upload,
        name="eval_set_upload",
    ),
    path(
        "projects/<int:project_id>/evaluation/review/",
        views.reference_queue,
        name="eval_reference_queue",
    ),
    path("eval-sets/<int:eval_set_id>/", views.eval_set_detail, name="eval_set_detail"),
    path("eval-sets/<int:eval_set_id>/delete/", views.eval_set_delete, name="eval_set_delete"),
    path("eval-items/<int:eval_item_id>/review/", views.eval_item_review, name="eval_item_review"),
    path("projects/<int:project_id>/eval-runs/new/", run_views.eval_run_new, name="eval_run_new"),
    path("eval-runs/<int:eval_run_id>/", run_views.eval_run_detail, name="eval_run_detail"),
    path(
        "eval-runs/<int:eval_run_id>/samples/", run_views.eval_run_samples, name="eval_run_samples"
    ),
    path(
        "eval-runs/<int:eval_run_id>/review/verdict/",
        run_views.eval_human_verdict,
        name="eval_human_verdict",
    ),
    path("eval-runs/<int:eval_run_id>/cancel/", run_views.eval_run_cancel, name="eval_run_cancel"),
    path("eval-runs/<int:eval_run_id>/resume/", run_views.eval_run_resume, name="eval_run_resume"),
]
