"""Pages and API of training: launch errors per field, roles, metrics since a step, the polled
partial stops when the run has ended, downloads refused until the run succeeded."""

from __future__ import annotations

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.training.models import TrainingMetric, TrainingRun
from tests.conftest import login

pytestmark = pytest.mark.django_db


def test_api_launch_validation_names_the_field(alice, project, api_client, version, base_model):
    client = api_client(alice)
    r = client.post(
        f"/api/v1/projects/{project.pk}/training-runs",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "method": "kd"},
        content_type="application/json",
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "method"


def test_api_launch_watch_and_metrics_since_a_step(
    alice, vera, project, api_client, version, base_model, sent_tasks
):
    r = api_client(alice).post(
        f"/api/v1/projects/{project.pk}/training-runs",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "max_steps": 5,
         "batch_size": 2},
        content_type="application/json",
    )  # fmt: skip
    assert r.status_code == 202, r.content
    run_id = r.json()["id"]
    assert r.json()["config"]["max_steps"] == 5 and r.json()["queue_position"] == 1
    for step in (1, 2, 3):
        TrainingMetric.objects.create(run_id=run_id, step=step, train_loss=1.0 / step)
    viewer = api_client(vera)
    rows = viewer.get(f"/api/v1/training-runs/{run_id}/metrics?since_step=1").json()
    assert [m["step"] for m in rows] == [2, 3]
    assert viewer.post(f"/api/v1/training-runs/{run_id}/cancel").status_code == 403
    download = viewer.get(f"/api/v1/training-runs/{run_id}/artifacts/adapter/download")
    assert download.status_code == 409
    assert api_client(alice).post(f"/api/v1/training-runs/{run_id}/cancel").json()["status"] == (
        "cancelled"
    )


def test_the_launch_form_shows_errors_per_field(alice, project, version, base_model):
    client = login(alice)
    page = client.get(f"/projects/{project.pk}/training/new/")
    assert page.status_code == 200 and b"lora_r" in page.content
    r = client.post(
        f"/projects/{project.pk}/training/new/",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "method": "sft",
         "batch_size": "0", "lora_r": "16"},
    )  # fmt: skip
    assert r.status_code == 422
    assert b"Enter a value between 1 and 4096" in r.content
    preview = client.get(
        f"/projects/{project.pk}/training/preview/",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "batch_size": "4",
         "max_steps": "-1", "epochs": "1", "lora_r": "16"},
    )  # fmt: skip
    assert b"<strong>8</strong> steps" in preview.content


def test_the_progress_partial_stops_polling_when_the_run_ended(
    alice, project, version, base_model, sent_tasks
):
    client = login(alice)
    r = client.post(
        f"/projects/{project.pk}/training/new/",
        {"dataset_version_id": version.pk, "base_model_id": base_model.pk, "method": "sft",
         "max_steps": "3", "lora_r": "4", "batch_size": "2"},
    )  # fmt: skip
    run = TrainingRun.objects.get()
    assert r.status_code == 302 and r.url == f"/training-runs/{run.pk}/"
    assert client.get(f"/training-runs/{run.pk}/progress/").status_code == 200
    TrainingRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    ended = client.get(f"/training-runs/{run.pk}/progress/")
    # Polling stops and the page reloads once, to show the artefacts outside the partial.
    assert ended.status_code == 286 and ended["HX-Refresh"] == "true"
    page = client.get(f"/projects/{project.pk}/")
    assert b"training-section" in page.content
