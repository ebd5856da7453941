from __future__ import annotations

import logging

import pytest
from django.template.loader import get_template
from django.test import Client

from tests.conftest import login

pytestmark = pytest.mark.django_db


def test_404_is_a_styled_page(alice):
    response = login(alice).get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and 'class="topbar"' in html and "/static/css/app.css" in html


def test_403_is_a_styled_page_and_logged_as_one_line(vera, project, caplog):
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = login(vera).get(f"/projects/{project.pk}/settings/")
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()
    records = [r for r in caplog.records if r.name == "django.request" and r.status_code == 403]
    assert len(records) == 1
    record = records[0]
    assert record.exc_info is None
    line = logging.Formatter().format(record)
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"Forbidden (Permission denied): /projects/{project.pk}/settings/")


def test_500_page_renders_without_request_or_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        html = get_template("500.html").render({})
    assert "Something went wrong" in html and "/static/css/app.css" in html


def test_a_crash_answers_the_styled_500(alice, settings):
    from django.urls import path

    def boom(request):
        raise RuntimeError("boom")

    import distillapp.urls

    settings.ROOT_URLCONF = type(
        "Urls", (), {"urlpatterns": [path("boom/", boom), *distillapp.urls.urlpatterns]}
    )
    client = Client(raise_request_exception=False)
    response = client.get("/boom/")
    assert response.status_code == 500
    assert b"Something went wrong" in response.content


def test_favicon_is_linked_and_favicon_ico_redirects_to_it(alice):
    client = login(alice)
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert b"<svg" in b"".join(icon.streaming_content)
