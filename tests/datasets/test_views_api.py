"""Pages and API of datasets: create, preview, build, progress, version page, downloads, delete."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distillapp.datasets.models import Dataset, DatasetVersion
from tests.conftest import login
from workers.tasks.datasets import build_dataset_version

pytestmark = pytest.mark.django_db


def _run_sent(sent_tasks):
    for task in sent_tasks:
        if task.name == "workers.tasks.datasets.build_dataset_version":
            build_dataset_version(*task.args)


def test_api_from_dataset_to_download(project, alice, vera, reviewed, api_client, sent_tasks):
    owner, viewer = api_client(alice), api_client(vera)
    assert (
        viewer.post(
            f"/api/v1/projects/{project.pk}/datasets",
            {"name": "x"},
            content_type="application/json",
        ).status_code
        == 403
    )
    r = owner.post(
        f"/api/v1/projects/{project.pk}/datasets",
        {"name": "maths"},
        content_type="application/json",
    )
    assert r.status_code == 201, r.content
    dataset_id = r.json()["id"]
    dup = owner.post(
        f"/api/v1/projects/{project.pk}/datasets",
        {"name": "maths"},
        content_type="application/json",
    )
    assert dup.status_code == 422 and dup.json()["errors"][0]["field"] == "name"
    assert [d["name"] for d in viewer.get(f"/api/v1/projects/{project.pk}/datasets").json()] == [
        "maths"
    ]
    bad = owner.post(
        f"/api/v1/datasets/{dataset_id}/versions",
        {"per_prompt": "many"},
        content_type="application/json",
    )
    assert bad.status_code == 422 and "detail" in bad.json() and bad.json()["errors"]
    assert (
        viewer.post(
            f"/api/v1/datasets/{dataset_id}/versions", {}, content_type="application/json"
        ).status_code
        == 403
    )
    r = owner.post(
        f"/api/v1/datasets/{dataset_id}/versions",
        {"validation_fraction": 0.5, "seed": 2},
        content_type="application/json",
    )
    assert r.status_code == 202 and r.json()["status"] == "queued"
    version_id = r.json()["id"]
    early = viewer.get(f"/api/v1/dataset-versions/{version_id}/download?format=jsonl")
    assert early.status_code == 409 and early.json()["detail"]
    _run_sent(sent_tasks)
    detail = viewer.get(f"/api/v1/datasets/{dataset_id}").json()
    assert detail["versions"][0]["status"] == "succeeded"
    version = viewer.get(f"/api/v1/dataset-versions/{version_id}").json()
    assert version["counts"]["rows"] == 5
    assert version["lineage"]["recipe"]["validation_fraction"] == 0.5
    assert version["diff"]["added"] == 5

    jsonl = viewer.get(f"/api/v1/dataset-versions/{version_id}/download?format=jsonl")
    assert jsonl.status_code == 200 and jsonl.streaming
    lines = [json.loads(x) for x in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert len(lines) == 5
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)
    assert "<think>x</think>6 edited" in {line["messages"][-1]["content"] for line in lines}

    train = viewer.get(f"/api/v1/dataset-versions/{version_id}/download?format=jsonl&split=train")
    n_train = len(b"".join(train.streaming_content).decode().splitlines())
    assert n_train == version["counts"]["train"]

    parquet = viewer.get(f"/api/v1/dataset-versions/{version_id}/download?format=parquet")
    assert parquet.status_code == 200 and parquet.streaming
    table = pq.read_table(io.BytesIO(b"".join(parquet.streaming_content)))
    assert table.num_rows == 5

    hf = viewer.get(f"/api/v1/dataset-versions/{version_id}/download?format=hf")
    assert hf.status_code == 200 and hf.streaming
    assert b"".join(hf.streaming_content)[:2] == b"PK"

    assert viewer.delete(f"/api/v1/dataset-versions/{version_id}").status_code == 403
    assert owner.delete(f"/api/v1/dataset-versions/{version_id}").status_code == 204
    assert not DatasetVersion.objects.filter(pk=version_id).exists()


def test_outsider_gets_404(project, charlie, reviewed, api_client, alice):
    dataset = Dataset.objects.create(project=project, name="d", created_by=alice)
    client = api_client(charlie)
    assert client.get(f"/api/v1/datasets/{dataset.pk}").status_code == 404
    assert login(charlie).get(f"/datasets/{dataset.pk}/").status_code == 404


def test_pages_from_project_to_download(project, alice, reviewed, sent_tasks):
    client = login(alice)
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Datasets" in page and f"/projects/{project.pk}/datasets/" in page
    r = client.post(f"/projects/{project.pk}/datasets/", {"name": "maths"})
    dataset = Dataset.objects.get(name="maths")
    assert r.status_code == 302 and r["Location"] == f"/datasets/{dataset.pk}/"
    detail = client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert (
        'hx-trigger="change delay:300ms, load"' in detail
        and f"/datasets/{dataset.pk}/preview/" in detail
    )
    preview = client.get(
        f"/datasets/{dataset.pk}/preview/",
        {"per_prompt": "one", "reasoning": "keep"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert re.search(r'data-count="rows">4<', preview)
    bad = client.get(f"/datasets/{dataset.pk}/preview/", {"validation_fraction": "7"}).content
    assert b"validation_fraction" in bad
    r = client.post(f"/datasets/{dataset.pk}/build/", {"reasoning": "strip"})
    version = DatasetVersion.objects.get(dataset=dataset)
    assert r.status_code == 302 and r["Location"] == f"/dataset-versions/{version.pk}/"
    polling = client.get(f"/dataset-versions/{version.pk}/progress/", HTTP_HX_REQUEST="true")
    assert polling.status_code == 200 and b'hx-trigger="every 2s"' in polling.content
    _run_sent(sent_tasks)
    done = client.get(f"/dataset-versions/{version.pk}/progress/", HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and done["HX-Refresh"] == "true"
    page = client.get(f"/dataset-versions/{version.pk}/").content.decode()
    assert "Lineage" in page and "maths.jsonl" in page and "teacher-model" in page
    assert "?format=parquet" in page and "?format=hf" in page
    download = client.get(f"/dataset-versions/{version.pk}/download/", {"format": "jsonl"})
    body = b"".join(download.streaming_content).decode()
    assert "<think>" not in body and len(body.splitlines()) == 5


def test_model_output_is_escaped_on_the_version_page(project, alice, reviewed, sent_tasks):
    from distillapp.datasets import services

    c = reviewed["c"][(0, 0)]
    type(c).objects.filter(pk=c.pk).update(text="<img src=x onerror=alert(1)>")
    dataset = services.dataset_create(project=project, name="x", user=alice)
    version = services.dataset_version_build(dataset=dataset, recipe={}, user=alice)
    _run_sent(sent_tasks)
    page = login(alice).get(f"/dataset-versions/{version.pk}/").content.decode()
    assert "<img src=x" not in page and "&lt;img src=x" in page


def test_viewer_cannot_build_or_delete_from_pages(project, alice, vera, reviewed):
    dataset = Dataset.objects.create(project=project, name="d", created_by=alice)
    client = login(vera)
    assert client.get(f"/datasets/{dataset.pk}/").status_code == 200
    assert b"Build version" not in client.get(f"/datasets/{dataset.pk}/").content
    assert client.post(f"/datasets/{dataset.pk}/build/", {}).status_code == 403
    assert client.post(f"/projects/{project.pk}/datasets/", {"name": "y"}).status_code == 403


def test_templates_have_no_inline_script_or_style():
    folder = Path(__file__).resolve().parents[2] / "templates" / "datasets"
    for path in folder.glob("*.html"):
        text = path.read_text()
        assert "style=" not in text, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\son[a-z]+=", text), path
