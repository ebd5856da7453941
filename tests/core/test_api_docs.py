"""/api/v1/docs works offline: Swagger UI from local static files, with bearer-token auth."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.conftest import login

pytestmark = pytest.mark.django_db


def test_docs_page_uses_only_local_static_files(alice):
    response = login(alice).get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert "cdn" not in html.lower()
    client = Client()
    for url in urls:
        served = client.get(url)
        assert served.status_code == 200, url
        assert len(b"".join(served.streaming_content)) > 100, url


def test_openapi_offers_the_bearer_scheme_for_authorize(alice):
    spec = login(alice).get("/api/v1/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes.values())


def test_tokens_page_links_the_docs_and_explains_authorize(alice):
    html = login(alice).get("/account/tokens/").content.decode()
    assert 'href="/api/v1/docs"' in html
    assert "Authorize" in html
