from __future__ import annotations

from django.urls import path

from distillapp.review import views

urlpatterns = [
    path("projects/<int:project_id>/review/", views.review_queue, name="review_queue"),
    path(
        "projects/<int:project_id>/review/prefetch/", views.review_prefetch, name="review_prefetch"
    ),
    path("projects/<int:project_id>/review/undo/", views.review_undo, name="review_undo"),
    path(
        "projects/<int:project_id>/review/judge-agreement/",
        views.review_judge_agreement,
        name="review_judge_agreement",
    ),
    path(
        "projects/<int:project_id>/review/decisions/",
        views.review_decisions,
        name="review_decisions",
    ),
    path(
        "projects/<int:project_id>/review/settings/",
        views.review_settings_page,
        name="review_settings",
    ),
    path("projects/<int:project_id>/review/refresh/", views.review_refresh, name="review_refresh"),
    path("projects/<int:project_id>/review/bulk/", views.review_bulk, name="review_bulk"),
    path(
        "projects/<int:project_id>/review/bulk/undo/",
        views.review_bulk_undo,
        name="review_bulk_undo",
    ),
    path(
        "projects/<int:project_id>/review/adjudication/",
        views.review_adjudication,
        name="review_adjudication",
    ),
    path(
        "projects/<int:project_id>/review/<int:completion_id>/decide/",
        views.review_decide,
        name="review_decide",
    ),
    path(
        "projects/<int:project_id>/review/<int:completion_id>/best/",
        views.review_pick_best,
        name="review_pick_best",
    ),
    path(
        "projects/<int:project_id>/review/<int:completion_id>/adjudicate/",
        views.review_adjudicate,
        name="review_adjudicate",
    ),
]
