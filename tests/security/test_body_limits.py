"""Request bodies are refused by size before anything reads them: nothing is parsed or spooled."""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.http import multipartparser
from django.test import Client
from django.test.client import ClientHandler

MiB = 1024 * 1024


class CountingStream(io.RawIOBase):
    """A request body of `size` bytes that records how much of it was read."""

    def __init__(self, size: int, content: bytes = b"") -> None:
        self.content = content or b"x" * size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        end = len(self.content) if n is None or n < 0 else min(len(self.content), self.pos + n)
        chunk = self.content[self.pos : end]
        self.pos = end
        return chunk

    def readline(self, limit: int = -1) -> bytes:
        return self.read(limit)


@pytest.fixture
def disk(settings, tmp_path, monkeypatch):
    """Where uploads would be spooled, and a record of every body parsed or file spooled."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(uploads)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1 * MiB
    settings.REQUEST_MAX_BYTES = 1 * MiB
    settings.REQUEST_MAX_BYTES_ANONYMOUS = 64 * 1024
    record = {"parsed": 0, "spooled": 0, "dir": uploads}
    real_parse = multipartparser.MultiPartParser.parse
    real_init = TemporaryUploadedFile.__init__

    def parse(self, *args, **kwargs):
        record["parsed"] += 1
        return real_parse(self, *args, **kwargs)

    def init(self, *args, **kwargs):
        record["spooled"] += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(multipartparser.MultiPartParser, "parse", parse)
    monkeypatch.setattr(TemporaryUploadedFile, "__init__", init)
    return record


def _jsonl(size: int) -> bytes:
    lines, total, i = [], 0, 0
    while total < size:
        line = json.dumps({"prompt": f"question number {i} " + "padding " * 20}).encode() + b"\n"
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)


def _environ(path: str, stream: io.RawIOBase, **extra: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **extra,
    }


@pytest.mark.django_db
def test_an_anonymous_multipart_post_to_login_is_refused_unread(disk) -> None:
    client = Client(enforce_csrf_checks=True)
    client.get("/login/")  # the csrftoken cookie is all an attacker has
    big = SimpleUploadedFile("fill.bin", b"\0" * (3 * MiB))
    response = client.post("/login/", {"username": "x", "password": "y", "file": big})
    assert response.status_code == 413
    assert disk["parsed"] == 0 and disk["spooled"] == 0
    assert list(disk["dir"].iterdir()) == []


@pytest.mark.django_db
def test_a_chunked_body_without_length_is_cut_at_the_limit(disk) -> None:
    body = CountingStream(5 * MiB)
    response = ClientHandler(enforce_csrf_checks=True)(
        _environ(
            "/login/",
            body,
            HTTP_TRANSFER_ENCODING="chunked",
            CONTENT_TYPE="multipart/form-data; boundary=zzz",
        )
    )
    assert response.status_code == 413
    assert body.pos <= 64 * 1024 + 1  # read up to the limit and not a byte further
    assert disk["parsed"] == 0 and disk["spooled"] == 0
    assert list(disk["dir"].iterdir()) == []


@pytest.mark.django_db
def test_a_small_chunked_json_body_is_read_and_handled(disk, alice, project) -> None:
    from distillapp.accounts.services import api_token_create

    _token, plain = api_token_create(user=alice, name="t")
    payload = json.dumps({"name": "Chunked", "kind": "openai", "base_url": "x", "model": "m"})
    response = ClientHandler()(
        _environ(
            f"/api/v1/projects/{project.pk}/teachers",
            CountingStream(0, payload.encode()),
            HTTP_TRANSFER_ENCODING="chunked",
            CONTENT_TYPE="application/json",
            HTTP_AUTHORIZATION=f"Bearer {plain}",
        )
    )
    # The body reached the view: its base_url was read and refused by validation.
    assert response.status_code == 422
    assert json.loads(response.content)["errors"][0]["field"] == "base_url"


@pytest.mark.django_db
def test_a_signed_in_member_may_send_ordinary_bodies_up_to_the_member_limit(
    disk, api_client, alice, project
) -> None:
    client = api_client(alice)
    url = f"/api/v1/projects/{project.pk}/teachers"
    padding = "p" * (200 * 1024)  # over the anonymous limit, under the member limit
    body = {"name": "T", "kind": "openai", "base_url": "x", "model": "m", "api_key": padding}
    assert client.post(url, body, content_type="application/json").status_code == 422
    body["api_key"] = "p" * (2 * MiB)
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 413 and "detail" in response.json()


@pytest.mark.django_db
def test_only_members_who_may_upload_get_the_upload_limit(
    disk, settings, api_client, project, adam, vera, charlie
) -> None:
    settings.PROMPT_UPLOAD_MAX_BYTES = 4 * MiB
    content = _jsonl(int(1.5 * MiB))  # over the member limit, under the upload limit
    url = f"/api/v1/projects/{project.pk}/prompt-sets"

    def upload(client: Client) -> int:
        return client.post(
            url, {"name": "Set", "file": SimpleUploadedFile("p.jsonl", content)}
        ).status_code

    assert upload(Client()) in (401, 413)
    assert upload(api_client(vera)) == 413  # a viewer may not upload
    assert upload(api_client(charlie)) == 413  # an outsider neither
    assert disk["parsed"] == 0 and disk["spooled"] == 0
    assert upload(api_client(adam)) == 201
    assert disk["spooled"] == 1  # the admin's upload went to disk, as uploads do


@pytest.mark.django_db
def test_an_upload_past_the_upload_limit_is_refused_unread(disk, settings, project, adam) -> None:
    from tests.conftest import login

    settings.PROMPT_UPLOAD_MAX_BYTES = 1 * MiB
    big = SimpleUploadedFile("p.jsonl", _jsonl(3 * MiB))
    response = login(adam).post(
        f"/projects/{project.pk}/prompt-sets/upload/", {"name": "Set", "file": big}
    )
    assert response.status_code == 413
    assert disk["parsed"] == 0 and disk["spooled"] == 0


@pytest.mark.django_db
def test_a_chunked_upload_must_declare_its_length(disk, settings, project, adam) -> None:
    from distillapp.accounts.services import api_token_create

    settings.PROMPT_UPLOAD_MAX_BYTES = 4 * MiB
    _token, plain = api_token_create(user=adam, name="t")
    response = ClientHandler()(
        _environ(
            f"/api/v1/projects/{project.pk}/prompt-sets",
            CountingStream(2 * MiB),
            HTTP_TRANSFER_ENCODING="chunked",
            CONTENT_TYPE="multipart/form-data; boundary=zzz",
            HTTP_AUTHORIZATION=f"Bearer {plain}",
        )
    )
    assert response.status_code == 411
    assert disk["parsed"] == 0 and disk["spooled"] == 0
