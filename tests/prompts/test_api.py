"""The prompt-set REST API: status codes, shapes and permissions."""

from __future__ import annotations

import pytest

from distillapp.prompts.models import Prompt, PromptSet
from tests.prompts.conftest import jsonl, parquet_bytes, upload

pytestmark = pytest.mark.django_db


def post_file(client, project, name="p.jsonl", content=None, **fields):
    content = (
        content if content is not None else jsonl({"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"})
    )
    return client.post(
        f"/api/v1/projects/{project.pk}/prompt-sets",
        {"file": upload(name, content), "name": "API set", **fields},
    )


def test_upload_returns_201_with_counts(alice, project, api_client):
    response = post_file(api_client(alice), project, seed="5", heldout_fraction="0")
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": body["id"],
        "name": "API set",
        "imported": 2,
        "duplicates_dropped": 1,
        "heldout": 0,
    }
    assert PromptSet.objects.get(pk=body["id"]).seed == 5


@pytest.mark.parametrize(
    ("name", "content", "status"),
    [
        ("p.jsonl", b"{not json}\n", 400),
        ("p.jsonl", b"", 400),
        ("p.exe", b"\x00\x01", 415),
        ("p.parquet", parquet_bytes({"question": ["x"]}), 422),
    ],
)
def test_bad_files_get_json_errors_with_lines(alice, project, api_client, name, content, status):
    response = post_file(api_client(alice), project, name=name, content=content)
    assert response.status_code == status
    body = response.json()
    assert (
        body["detail"]
        and isinstance(body["errors"], list)
        and {"line", "message"} <= set(body["errors"][0])
    )
    assert Prompt.objects.count() == 0


def test_too_large_is_413(alice, project, api_client, settings):
    settings.PROMPT_UPLOAD_MAX_BYTES = 5
    assert post_file(api_client(alice), project).status_code == 413


@pytest.mark.parametrize(
    "fields",
    [
        {"heldout_fraction": "-0.1"},
        {"heldout_fraction": "1.01"},
        {"heldout_fraction": "lots"},
        {"seed": "x"},
        {"seed": "-3"},
    ],
)
def test_odd_parameters_are_422_never_500(alice, project, api_client, fields):
    response = post_file(api_client(alice), project, **fields)
    assert response.status_code == 422 and response.json()["detail"]


def test_missing_file_is_422(alice, project, api_client):
    response = api_client(alice).post(f"/api/v1/projects/{project.pk}/prompt-sets", {"name": "x"})
    assert response.status_code == 422 and "detail" in response.json()


def test_list_get_browse_and_delete(alice, project, api_client):
    client = api_client(alice)
    content = jsonl(
        *[{"prompt": f"question {i}", "kind": "even" if i % 2 == 0 else "odd"} for i in range(7)]
    )
    set_id = post_file(client, project, content=content, heldout_fraction="0").json()["id"]
    listed = client.get(f"/api/v1/projects/{project.pk}/prompt-sets").json()
    assert [s["id"] for s in listed] == [set_id] and listed[0]["total_count"] == 7
    assert client.get(f"/api/v1/prompt-sets/{set_id}").json()["source_format"] == "jsonl"
    first = client.get(f"/api/v1/prompt-sets/{set_id}/prompts?limit=4").json()
    assert len(first["items"]) == 4 and first["next_cursor"]
    second = client.get(
        f"/api/v1/prompt-sets/{set_id}/prompts", {"limit": 4, "cursor": first["next_cursor"]}
    ).json()
    assert len(second["items"]) == 3 and second["next_cursor"] is None
    assert {p["id"] for p in first["items"]}.isdisjoint(p["id"] for p in second["items"])
    item = first["items"][0]
    assert set(item) == {
        "id",
        "position",
        "external_id",
        "messages",
        "text",
        "reference",
        "metadata",
        "split",
    }
    evens = client.get(
        f"/api/v1/prompt-sets/{set_id}/prompts", {"meta_key": "kind", "meta_value": "even"}
    ).json()
    assert len(evens["items"]) == 4
    assert client.delete(f"/api/v1/prompt-sets/{set_id}").status_code == 204
    assert client.get(f"/api/v1/prompt-sets/{set_id}").status_code == 404
    assert Prompt.objects.count() == 0


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("cursor=not-a-cursor", 400),
        ("limit=100000000000000000000", 200),
        ("limit=-5", 200),
        ("limit=abc", 422),
        ("split=test", 422),
        ("meta_value=x", 422),
        ("q=" + "x" * 5000, 200),
        ("q=%00%01", 200),
        ("meta_key=%00&meta_value=1", 200),
    ],
)
def test_odd_browse_inputs_never_answer_500(alice, project, api_client, query, status):
    client = api_client(alice)
    set_id = post_file(client, project).json()["id"]
    response = client.get(f"/api/v1/prompt-sets/{set_id}/prompts?{query}")
    assert response.status_code == status, response.content
    assert ("items" in response.json()) if status == 200 else response.json()["detail"]


def test_viewer_cannot_upload_or_delete_and_outsider_gets_404(
    alice, vera, charlie, project, api_client
):
    set_id = post_file(api_client(alice), project).json()["id"]
    viewer = api_client(vera)
    assert viewer.get(f"/api/v1/prompt-sets/{set_id}/prompts").status_code == 200
    assert post_file(viewer, project).status_code == 403
    assert viewer.delete(f"/api/v1/prompt-sets/{set_id}").status_code == 403
    outsider = api_client(charlie)
    assert post_file(outsider, project).status_code == 404
    assert outsider.get(f"/api/v1/prompt-sets/{set_id}").status_code == 404
    assert outsider.get(f"/api/v1/projects/{project.pk}/prompt-sets").status_code == 404
    assert outsider.delete(f"/api/v1/prompt-sets/{set_id}").status_code == 404
    assert PromptSet.objects.count() == 1


def test_anonymous_gets_401(project):
    from django.test import Client

    assert Client().get(f"/api/v1/projects/{project.pk}/prompt-sets").status_code == 401
