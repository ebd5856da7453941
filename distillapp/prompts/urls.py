from __future__ import annotations

from django.urls import path

from distillapp.prompts import views

urlpatterns = [
    path(
        "projects/<int:project_id>/prompt-sets/upload/",
        views.prompt_set_upload,
        name="prompt_set_upload",
    ),
    path("prompt-sets/<int:prompt_set_id>/", views.prompt_set_detail, name="prompt_set_detail"),
    path(
        "prompt-sets/<int:prompt_set_id>/search-index/",
        views.prompt_set_search_index,
        name="prompt_set_search_index",
    ),
    path(
        "prompt-sets/<int:prompt_set_id>/delete/", views.prompt_set_delete, name="prompt_set_delete"
    ),
]
