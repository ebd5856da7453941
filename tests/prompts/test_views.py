"""Prompt set pages: project section, upload (plain and XHR), browse partials, delete."""

from __future__ import annotations

import pytest

from distillapp.prompts.models import Prompt, PromptSet
from distillapp.prompts.services import prompt_set_import
from tests.inert_html import active_content
from tests.prompts.conftest import jsonl, upload

pytestmark = pytest.mark.django_db


def make_set(project, records):
    return prompt_set_import(
        project=project, file=upload("p.jsonl", jsonl(*records)), name="Set", heldout_fraction=0
    ).prompt_set


def test_project_page_shows_empty_state_and_upload_form_to_admins(
    alice_client, vera_client, project
):
    body = alice_client.get(f"/projects/{project.pk}/").content.decode()
    assert (
        "No prompt sets yet" in body
        and 'enctype="multipart/form-data"' in body
        and "js/upload.js" in body
    )
    viewer_body = vera_client.get(f"/projects/{project.pk}/").content.decode()
    assert "Ask an admin" in viewer_body and "multipart/form-data" not in viewer_body


def test_upload_redirects_to_the_new_set_and_lists_it(alice_client, project):
    response = alice_client.post(
        f"/projects/{project.pk}/prompt-sets/upload/",
        {
            "file": upload("mine.jsonl", jsonl({"prompt": "one"}, {"prompt": "two"})),
            "name": "",
            "heldout_fraction": "0",
        },
    )
    ps = PromptSet.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/prompt-sets/{ps.pk}/"
    assert ps.name == "mine" and ps.total_count == 2
    assert "Imported 2 prompts" in alice_client.get(response["Location"]).content.decode()
    assert "mine" in alice_client.get(f"/projects/{project.pk}/").content.decode()


def test_upload_errors_rerender_the_form_with_lines_and_status(alice_client, project):
    url = f"/projects/{project.pk}/prompt-sets/upload/"
    bad = jsonl({"prompt": "ok"}) + b"{broken\n"
    page = alice_client.post(url, {"file": upload("bad.jsonl", bad), "name": "keep me"})
    body = page.content.decode()
    assert (
        page.status_code == 400
        and "Line 2:" in body
        and 'value="keep me"' in body
        and "<html" in body
    )
    partial = alice_client.post(
        url,
        {"file": upload("bad.exe", b"\x00"), "name": "x"},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert (
        partial.status_code == 415
        and "<html" not in partial.content.decode()
        and "data-upload" in partial.content.decode()
    )
    missing = alice_client.post(url, {"name": "x"})
    assert missing.status_code == 400 and "Choose a file" in missing.content.decode()
    assert Prompt.objects.count() == 0


def test_upload_refuses_a_declared_body_over_the_limit_before_reading_it(
    alice_client, project, settings
):
    settings.PROMPT_UPLOAD_MAX_BYTES = 10
    response = alice_client.post(
        f"/projects/{project.pk}/prompt-sets/upload/",
        {"file": upload("a.jsonl", jsonl({"prompt": "x" * 2_000_000}))},
    )
    assert response.status_code == 413 and PromptSet.objects.count() == 0


def test_browse_shows_escaped_text_roles_reference_and_metadata(alice_client, project):
    ps = make_set(
        project,
        [
            {
                "prompt": "<script>alert(1)</script> hello",
                "reference": "<b>ref</b>",
                "source": "<img src=x onerror=alert(1)>",
            },
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Hi there"},
                ],
                "split": "heldout",
            },
        ],
    )
    body = alice_client.get(f"/prompt-sets/{ps.pk}/").content.decode()
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; hello" in body and "&lt;b&gt;ref&lt;/b&gt;" in body
    )
    assert "Be terse." in body and "badge-heldout" in body and "system" in body
    listing = body[body.index('id="prompt-list"') :]
    assert active_content("<div " + listing) == []


def test_browse_partials_search_and_load_more(alice_client, project):
    ps = make_set(
        project,
        [{"prompt": f"question number {i}", "n": i} for i in range(60)]
        + [{"prompt": "a special one"}],
    )
    url = f"/prompt-sets/{ps.pk}/"
    full = alice_client.get(url).content.decode()
    assert 'hx-trigger="input changed delay:300ms, search"' in full and "Load more" in full
    assert full.count('class="card prompt"') == 50
    listing = alice_client.get(url, {"q": "special"}, HTTP_HX_REQUEST="true").content.decode()
    assert (
        "<html" not in listing
        and listing.count('class="card prompt"') == 1
        and "a special one" in listing
    )
    first = alice_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    cursor = first.split("cursor=")[1].split('"')[0].replace("&amp;", "&")
    more = alice_client.get(url + "?cursor=" + cursor, HTTP_HX_REQUEST="true").content.decode()
    assert (
        more.count('class="card prompt"') == 11
        and 'id="prompt-list"' not in more
        and "Load more" not in more
    )
    assert alice_client.get(url, {"cursor": "forged"}).status_code == 400
    empty = alice_client.get(url, {"q": "nothing-matches-this"}).content.decode()
    assert "No prompts match" in empty


def test_delete_asks_for_confirmation_then_deletes(alice_client, project):
    ps = make_set(project, [{"prompt": "x"}, {"prompt": "y"}])
    confirm = alice_client.get(f"/prompt-sets/{ps.pk}/delete/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    response = alice_client.post(f"/prompt-sets/{ps.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert not PromptSet.objects.exists() and not Prompt.objects.exists()


def test_viewer_cannot_upload_or_delete_and_outsider_gets_404(vera_client, charlie_client, project):
    ps = make_set(project, [{"prompt": "x"}])
    assert vera_client.get(f"/prompt-sets/{ps.pk}/").status_code == 200
    assert (
        vera_client.post(
            f"/projects/{project.pk}/prompt-sets/upload/",
            {"file": upload("a.jsonl", b'{"prompt":"y"}')},
        ).status_code
        == 403
    )
    assert vera_client.post(f"/prompt-sets/{ps.pk}/delete/").status_code == 403
    assert charlie_client.get(f"/prompt-sets/{ps.pk}/").status_code == 404
    assert charlie_client.post(f"/prompt-sets/{ps.pk}/delete/").status_code == 404
    assert charlie_client.post(f"/projects/{project.pk}/prompt-sets/upload/").status_code == 404
    assert PromptSet.objects.count() == 1 and Prompt.objects.count() == 1
