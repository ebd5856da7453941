"""Every write path validates: out-of-range values answer 4xx with the field, never a database
error; prompt metadata is bounded in depth, keys and bytes, refused with its line number."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import reverse

from distillapp.api import api
from distillapp.prompts.parsing import MAX_METADATA_DEPTH, MAX_METADATA_KEYS
from tests.conftest import login
from tests.factories import TeacherFactory

BAD_TEACHER_VALUES = [
    ("concurrency", -1),
    ("concurrency", 0),
    ("concurrency", 1025),
    ("concurrency", 2**63),
    ("batch_size", -1),
    ("batch_size", 2**40),
    ("requests_per_minute", 0),
    ("requests_per_minute", -5),
    ("tokens_per_minute", 2**40),
    ("name", ""),
    ("name", "n" * 500),
    ("model", "m" * 5000),
    ("base_url", "https://api.example.com/" + "x" * 600),
    ("model_path", "/" + "p" * 5000),
    ("device", "gpu" * 10),
    ("dtype", "int3"),
    ("api_key", "k" * 5000),
    ("prices", {"input_per_m": -1}),
    ("prices", {"output_per_m": "1e12"}),
    ("prices", {"input_per_m": "NaN"}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value"), BAD_TEACHER_VALUES)
def test_patch_and_post_refuse_the_same_out_of_range_values(
    api_client, alice, project, field, value
) -> None:
    client = api_client(alice)
    teacher = TeacherFactory(project=project, base_url="https://api.example.com/v1")
    before = {k: v for k, v in teacher.__dict__.items() if not k.startswith("_")}
    patch = client.patch(
        f"/api/v1/teachers/{teacher.pk}", {field: value}, content_type="application/json"
    )
    body = {"name": "New", "kind": "openai", "base_url": "https://api.example.com/v1", "model": "m"}
    post = client.post(
        f"/api/v1/projects/{project.pk}/teachers",
        {**body, field: value},
        content_type="application/json",
    )
    for response in (patch, post):
        assert response.status_code == 422, (response.status_code, response.content[:300])
        errors = response.json()["errors"]
        assert errors and all(field in e.get("field", "") for e in errors)
    teacher.refresh_from_db()
    assert {k: v for k, v in teacher.__dict__.items() if not k.startswith("_")} == before


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["openai", "hf_local"])
@pytest.mark.parametrize(
    ("field", "value"), [("concurrency", "-1"), ("batch_size", "-1"), ("batch_size", "99999999999")]
)
def test_the_teacher_edit_form_shows_errors_instead_of_failing(
    adam, project, tmp_path, kind, field, value
) -> None:
    teacher = TeacherFactory(project=project, kind=kind, model_path=str(tmp_path))
    form = {
        "name": teacher.name,
        "base_url": "https://api.example.com/v1",
        "model": "m",
        "model_path": str(tmp_path),
        "device": "auto",
        "dtype": "auto",
        "batch_size": "8",
        "concurrency": "4",
        field: value,
    }
    response = login(adam).post(reverse("teacher_edit", args=[teacher.pk]), form)
    assert response.status_code == 422
    teacher.refresh_from_db()
    assert getattr(teacher, field) > 0


def _bad_values(schema: dict[str, Any], components: dict[str, Any]) -> list[Any]:
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    options = schema.get("anyOf") or [schema]
    types = {option.get("type") for option in options}
    values: list[Any] = []
    if "integer" in types or "number" in types:
        values += [-1, -(2**63), 2**64]
    if "string" in types:
        values += ["\x00", "s" * 100_000]
    if "object" in types:
        nested: Any = {}
        for _ in range(200):
            nested = {"k": nested}
        values += [nested]
    if "array" in types:
        values += [[None] * 3]
    if "boolean" in types:
        values += ["not a boolean"]
    return values


def _update_operations() -> list[tuple[str, str, dict[str, Any]]]:
    schema = api.get_openapi_schema()
    out = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("patch", "put"):
                content = operation["requestBody"]["content"]["application/json"]["schema"]
                out.append((method, path, content))
    return out


# Without a test transaction around it: on PostgreSQL a refused value (a NUL byte) aborts the
# transaction it happens in, as it would abort only that request's statement in production.
@pytest.mark.django_db(transaction=True)
def test_every_update_endpoint_answers_out_of_range_values_without_a_5xx(
    api_client, world, project
) -> None:
    """Discovered from the OpenAPI document, so a new update endpoint cannot skip this."""
    schema = api.get_openapi_schema()
    components = schema["components"]["schemas"]
    client = api_client(world["alice"])
    values = {**world["values"], "username": "bob"}
    operations = _update_operations()
    assert {path for _m, path, _s in operations} >= {"/api/v1/teachers/{teacher_id}"}
    sent = 0
    for method, path, body_schema in operations:
        if "$ref" in body_schema:
            body_schema = components[body_schema["$ref"].rsplit("/", 1)[-1]]
        url = path.format(**values)
        for field, field_schema in body_schema.get("properties", {}).items():
            for value in _bad_values(field_schema, components):
                response = getattr(client, method)(
                    url, json.dumps({field: value}), content_type="application/json"
                )
                sent += 1
                assert response.status_code < 500, (method, url, field, response.content[:300])
    assert sent > 20


# --- prompt metadata ------------------------------------------------------------------------


def _upload(client, project, name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return client.post(
        f"/api/v1/projects/{project.pk}/prompt-sets",
        {"name": "Set", "file": SimpleUploadedFile(name, content)},
    )


def _deep_line(depth: int) -> str:
    # Written by hand: json.dumps itself recurses too deep for 1,000 levels.
    return '{"prompt": "bad", "deep": ' + '{"k": ' * (depth - 1) + '"leaf"' + "}" * depth


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (_deep_line(MAX_METADATA_DEPTH + 1), "deeper than"),
        (_deep_line(1000), "deeper than"),
        (
            json.dumps({"prompt": "bad", **{f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}}),
            "more than",
        ),
        (json.dumps({"prompt": "bad", "big": "b" * (70 * 1024)}), "larger than"),
    ],
)
def test_metadata_past_the_limits_is_refused_with_its_line_number(
    api_client, alice, project, line, expected
) -> None:
    content = ('{"prompt": "fine one"}\n{"prompt": "fine two"}\n' + line + "\n").encode()
    response = _upload(api_client(alice), project, "p.jsonl", content)
    # Row problems are bad content (400, as documented), never a failure while writing.
    assert response.status_code == 400, response.content[:300]
    errors = response.json()["errors"]
    assert errors[0]["line"] == 3 and expected in errors[0]["message"]


@pytest.mark.django_db
def test_metadata_at_the_limits_is_accepted(api_client, alice, project) -> None:
    lines = [
        _deep_line(MAX_METADATA_DEPTH).replace('"bad"', '"deep one"'),
        json.dumps({"prompt": "wide one", **{f"k{i}": i for i in range(MAX_METADATA_KEYS)}}),
    ]
    content = ("\n".join(lines) + "\n").encode()
    response = _upload(api_client(alice), project, "p.jsonl", content)
    assert response.status_code == 201, response.content[:300]


@pytest.mark.django_db
def test_a_csv_with_thousands_of_columns_is_refused_at_the_header(
    api_client, alice, project
) -> None:
    header = ["prompt"] + [f"c{i}" for i in range(10_000)]
    row = ["hello"] + ["v"] * 10_000
    content = (",".join(header) + "\n" + ",".join(row) + "\n").encode()
    response = _upload(api_client(alice), project, "p.csv", content)
    assert response.status_code == 422
    body = response.json()
    assert "metadata columns" in body["detail"] and body["errors"][0]["line"] == 1
