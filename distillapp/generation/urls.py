from __future__ import annotations

from django.urls import path

from distillapp.generation import views

urlpatterns = [
    path("projects/<int:project_id>/teachers/new/", views.teacher_new, name="teacher_new"),
    path("teachers/<int:teacher_id>/", views.teacher_detail, name="teacher_detail"),
    path("teachers/<int:teacher_id>/edit/", views.teacher_edit, name="teacher_edit"),
    path("teachers/<int:teacher_id>/delete/", views.teacher_delete, name="teacher_delete"),
    path("teachers/<int:teacher_id>/test/", views.teacher_test_view, name="teacher_test"),
    path(
        "projects/<int:project_id>/generation-jobs/new/",
        views.job_launch,
        name="generation_job_launch",
    ),
    path("generation-jobs/<int:job_id>/", views.job_detail, name="generation_job_detail"),
    path(
        "generation-jobs/<int:job_id>/progress/", views.job_progress, name="generation_job_progress"
    ),
    path("generation-jobs/<int:job_id>/cancel/", views.job_cancel, name="generation_job_cancel"),
    path("generation-jobs/<int:job_id>/resume/", views.job_resume, name="generation_job_resume"),
    path(
        "generation-jobs/<int:job_id>/retry-failed/",
        views.job_retry_failed,
        name="generation_job_retry_failed",
    ),
]
