"""The evaluation API and pages: create, upload, read, page, approve, delete; escaping."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from distillapp.evaluation.models import EvalItem, EvalSet
from tests.conftest import login

pytestmark = pytest.mark.django_db


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.extend(name for name, _value in attrs)


def _attributes(html: str) -> list[str]:
    parser = _Attrs()
    parser.feed(html)
    return parser.names


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_api_creates_lists_pages_and_deletes_eval_sets(project, alice, api_client):
    client = api_client(alice)
    made = client.post(
        f"/api/v1/projects/{project.pk}/eval-sets",
        {"kind": "capability"},
        content_type="application/json",
    )
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["kind"] == "capability" and body["eval_only"] is True
    listed = client.get(f"/api/v1/projects/{project.pk}/eval-sets").json()
    assert [s["id"] for s in listed] == [body["id"]]
    page = client.get(f"/api/v1/eval-sets/{body['id']}/items?limit=25").json()
    assert len(page["items"]) == 25 and page["next_cursor"]
    rest = client.get(
        f"/api/v1/eval-sets/{body['id']}/items?limit=500&cursor={page['next_cursor']}"
    )
    assert len(rest.json()["items"]) == body["item_count"] - 25
    bad = client.get(f"/api/v1/eval-sets/{body['id']}/items?cursor=forged")
    assert bad.status_code == 400 and "detail" in bad.json()
    assert client.delete(f"/api/v1/eval-sets/{body['id']}").status_code == 204
    assert not EvalSet.objects.exists()


def test_api_upload_and_its_errors(project, alice, api_client):
    client = api_client(alice)
    ok = client.post(
        f"/api/v1/projects/{project.pk}/eval-sets/upload",
        {
            "file": SimpleUploadedFile("e.jsonl", _jsonl([{"prompt": "2+2?", "reference": "4"}])),
            "name": "Mine",
        },
    )
    assert ok.status_code == 201, ok.content
    assert ok.json()["name"] == "Mine" and ok.json()["reference_count"] == 1
    bad = client.post(
        f"/api/v1/projects/{project.pk}/eval-sets/upload",
        {"file": SimpleUploadedFile("e.jsonl", b'{"prompt": "x"}\n{"nope": 1}\n')},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["line"] == 2
    heldout = client.post(
        f"/api/v1/projects/{project.pk}/eval-sets",
        {"kind": "heldout"},
        content_type="application/json",
    )
    assert heldout.status_code == 422 and heldout.json()["detail"]


def test_api_reviewer_approves_a_reference_and_a_viewer_cannot(project, bob, vera, api_client):
    s = EvalSet.objects.create(project=project, name="s", kind="heldout", item_count=1)
    item = EvalItem.objects.create(eval_set=s, project=project, position=1, text="q", reference="a")
    denied = api_client(vera).post(
        f"/api/v1/eval-items/{item.pk}/review", {}, content_type="application/json"
    )
    assert denied.status_code == 403
    done = api_client(bob).post(
        f"/api/v1/eval-items/{item.pk}/review",
        {"reference": "better"},
        content_type="application/json",
    )
    assert done.status_code == 200, done.content
    assert done.json()["reference_verified"] is True
    assert done.json()["reference_verified_by"] == "bob"
    empty = EvalItem.objects.create(eval_set=s, project=project, position=2, text="q2")
    refused = api_client(bob).post(
        f"/api/v1/eval-items/{empty.pk}/review", {}, content_type="application/json"
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "reference"


def test_the_project_page_lists_eval_sets_and_the_forms(project, alice):
    client = login(alice)
    response = client.post(reverse("eval_set_add", args=[project.pk]), {"kind": "safety"})
    s = EvalSet.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "eval_set_detail", args=[s.pk]
    )
    page = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert 'id="evaluation-section"' in page and s.name in page
    assert reverse("eval_set_upload", args=[project.pk]) in page


def test_the_upload_form_adds_a_set_or_says_why_not(project, alice):
    client = login(alice)
    url = reverse("eval_set_upload", args=[project.pk])
    client.post(
        url, {"file": SimpleUploadedFile("e.jsonl", _jsonl([{"prompt": "q", "reference": "r"}]))}
    )
    assert EvalSet.objects.count() == 1
    response = client.post(url, {"file": SimpleUploadedFile("e.jsonl", b"{broken\n")}, follow=True)
    assert EvalSet.objects.count() == 1
    assert "Nothing was added" in response.content.decode()


def test_the_eval_set_page_escapes_untrusted_text_inside_hx_disable(project, alice):
    s = EvalSet.objects.create(project=project, name="<b>set</b>", kind="uploaded", item_count=1)
    EvalItem.objects.create(
        eval_set=s,
        project=project,
        position=1,
        text='<script>alert(1)</script><a hx-get="/x" onclick="y">',
        reference="<img src=x onerror=z>",
    )
    html = login(alice).get(reverse("eval_set_detail", args=[s.pk])).content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "<b>set</b>" not in html
    assert "hx-disable" in html
    assert not [a for a in _attributes(html) if a == "style" or a.startswith("on")]


def test_the_reference_queue_approves_an_edited_reference(project, bob):
    s = EvalSet.objects.create(project=project, name="held", kind="heldout", item_count=1)
    item = EvalItem.objects.create(eval_set=s, project=project, position=1, text="held question")
    client = login(bob)
    queue = client.get(reverse("eval_reference_queue", args=[project.pk])).content.decode()
    assert "held question" in queue and reverse("eval_item_review", args=[item.pk]) in queue
    client.post(reverse("eval_item_review", args=[item.pk]), {"reference": "the answer"})
    item.refresh_from_db()
    assert item.reference == "the answer" and item.reference_verified_by == bob
    assert (
        "held question"
        not in client.get(reverse("eval_reference_queue", args=[project.pk])).content.decode()
    )
