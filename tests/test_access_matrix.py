"""The access matrix: every URL pattern that takes an object id, for every kind of caller.

Patterns are discovered from the URL resolver, so a new URL is covered the moment it exists. A new
kind of id in a URL fails `test_every_object_kwarg_has_a_builder` until a builder is added below.

- outsider (another organisation): 404 on every method, pages, partials and API alike;
- viewer: can read, never write (403, or 405 where the method does not exist);
- reviewer: can only write to review endpoints;
- admin: can read everything (no 403/404/500 on GET).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from distillapp.accounts.services import api_token_create

KWARG = re.compile(r"<(?:(?P<conv>\w+):)?(?P<name>\w+)>")
# Writes that reviewers may make: anything under a review path (queue, decisions, undo, best pick).
REVIEWER_MAY_WRITE = re.compile(r"(^|/)review(/|$)")
WRITE_METHODS_UI = ["post"]
WRITE_METHODS_API = ["post", "put", "patch", "delete"]


def _walk(patterns: list, prefix: str = "") -> Iterator[str]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern)


def object_routes() -> list[str]:
    routes = []
    for route in _walk(get_resolver().url_patterns):
        if route.startswith(("admin/", "^admin/")) or not KWARG.search(route):
            continue
        routes.append(route)
    return sorted(set(routes))


ROUTES = object_routes()


def _is_api(route: str) -> bool:
    return route.startswith("api/")


BUILDABLE = {
    "org_id",
    "project_id",
    "prompt_set_id",
    "teacher_id",
    "job_id",
    "completion_id",
    "token_id",
    "invitation_id",
    "username",
    "dataset_id",
    "version_id",
    "eval_set_id",
    "eval_item_id",
    "eval_run_id",
    "base_model_id",
    "training_run_id",
    "artifact_name",
}
# Pages only owners may read (admins get 403 there): the audit log.
OWNER_ONLY = re.compile(r"(^|/)audit(/|$)")


def _url(route: str, values: dict) -> str:
    def sub(match: re.Match) -> str:
        return str(values[match.group("name")])

    path = KWARG.sub(sub, route)
    return "/" + path.lstrip("^").rstrip("$")


def _client(user, api: bool) -> Client:
    if api:
        _t, plain = api_token_create(user=user, name="matrix")
        return Client(HTTP_AUTHORIZATION=f"Bearer {plain}")
    client = Client()
    client.force_login(user)
    return client


def _resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in schema:
        node = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _sample(schema: dict, spec: dict):
    """A minimal value that passes the schema, so requests reach the view's access check."""
    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        return _sample(next(s for s in schema["anyOf"] if s.get("type") != "null"), spec)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        return {
            k: _sample(v, spec)
            for k, v in schema.get("properties", {}).items()
            if k in schema.get("required", [])
        }
    return {"string": "x", "integer": 1, "number": 0.5, "boolean": False, "array": []}.get(
        kind, "x"
    )


def _api_body(route: str, method: str) -> tuple[str | dict, str | None]:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from distillapp.api import api

    spec = api.get_openapi_schema()
    path = "/api/v1/" + KWARG.sub(lambda m: "{" + m.group("name") + "}", route[len("api/v1/") :])
    operation = spec["paths"].get(path, {}).get(method, {})
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        import json

        return json.dumps(_sample(content["application/json"]["schema"], spec)), "application/json"
    if "multipart/form-data" in content:
        body = _sample(content["multipart/form-data"]["schema"], spec)
        return {
            k: SimpleUploadedFile("x.jsonl", b'{"prompt": "x"}\n') if k == "file" else v
            for k, v in body.items()
        }, None
    return "{}", "application/json"


def _request(client: Client, method: str, url: str, route: str, api: bool):
    if api and method != "get":
        data, content_type = _api_body(route, method)
        if content_type is None:
            return getattr(client, method)(url, data=data)
        return getattr(client, method)(url, data=data, content_type=content_type)
    return getattr(client, method)(url)


def test_routes_were_discovered():
    assert any(r.startswith("api/") for r in ROUTES)
    assert any("project_id" in r and not r.startswith("api/") for r in ROUTES)


def test_every_object_kwarg_has_a_builder():
    unknown = {m.group("name") for r in ROUTES for m in KWARG.finditer(r)} - BUILDABLE
    assert not unknown, (
        f"Add builders to tests/test_access_matrix.py for URL kwargs: {sorted(unknown)}"
    )


def _check(world, user_key: str, expect) -> list[str]:
    failures = []
    values = world["values"]
    clients = {api: _client(world[user_key], api) for api in (False, True)}
    for route in ROUTES:
        api = _is_api(route)
        url = _url(route, values)
        for method in ["get", *(WRITE_METHODS_API if api else WRITE_METHODS_UI)]:
            response = _request(clients[api], method, url, route, api)
            problem = expect(route, method, response.status_code)
            if problem:
                failures.append(
                    f"{method.upper()} {url} ({route}) as {user_key}: {response.status_code} {problem}"
                )
    return failures


@pytest.mark.django_db
def test_outsider_gets_404_everywhere(world):
    def expect(route, method, status):
        return None if status in (404, 405) else "expected 404"

    failures = _check(world, "charlie", expect)
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_viewer_can_read_but_never_write(world):
    def expect(route, method, status):
        if "token_id" in route:  # tokens belong to a user, not an organisation
            return None if status in (404, 405) else "expected 404 for someone else's token"
        if status >= 500:
            return "server error"
        if method == "get":
            return None if status != 404 else "members must not get 404"
        return None if status in (403, 405) else "viewers must not write"

    failures = _check(world, "vera", expect)
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_reviewer_writes_only_to_review_endpoints(world):
    def expect(route, method, status):
        if "token_id" in route:
            return None if status in (404, 405) else "expected 404 for someone else's token"
        if status >= 500:
            return "server error"
        if method == "get" or REVIEWER_MAY_WRITE.search(route):
            return None if status != 404 or "username" in route else "members must not get 404"
        return None if status in (403, 405) else "reviewers may only review"

    failures = _check(world, "bob", expect)
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_admin_can_read_every_object_page(world):
    def expect(route, method, status):
        if method != "get" or "token_id" in route:
            return None
        if OWNER_ONLY.search(route):
            return None if status == 403 else "only owners may read this"
        return None if status not in (403, 404) and status < 500 else "admins must be able to read"

    # Only GETs are checked for admins: a write with an empty body would change the world.
    values = world["values"]
    failures = []
    for api in (False, True):
        client = _client(world["adam"], api)
        for route in (r for r in ROUTES if _is_api(r) == api):
            url = _url(route, values)
            status = client.get(url).status_code
            problem = expect(route, "get", status)
            if problem:
                failures.append(f"GET {url} as adam: {status} {problem}")
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_anonymous_is_sent_to_login_or_gets_401(world):
    client = Client()
    failures = []
    for route in ROUTES:
        url = _url(route, world["values"])
        status = client.get(url).status_code
        expected = (401, 405) if _is_api(route) else (302, 405)
        if status not in expected:
            failures.append(f"GET {url} anonymous: {status}")
    assert not failures, "\n".join(failures)
