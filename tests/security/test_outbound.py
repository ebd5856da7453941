"""User-given URLs: refused when saved and when used, at connect time, with no foreign body shown."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from django.core.exceptions import ValidationError

from distillapp.generation import services
from distillapp.generation.probe import teacher_test
from tests.factories import TeacherFactory
from tests.security.conftest import chat_reply
from workers.engine.judge import JudgeClient, JudgeItem
from workers.engine.outbound import OutboundPolicy, OutboundRefused, check_url, sync_client
from workers.engine.teachers.openai_runner import RunnerConfig, WorkItem, run_openai

STRICT = OutboundPolicy()
LOOPBACK = OutboundPolicy.parse(["127.0.0.1/32"])

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/",
    "http://0xA9FEA9FE/",
    "http://0251.0376.0251.0376/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://metadata.google.internal/",
    "http://127.0.0.1:6379",
    "http://localhost:5432",
    "http://0.0.0.0:5432",
    "http://[::1]:8000/v1",
    "http://10.1.2.3/v1",
    "http://192.168.0.10/v1",
    "http://172.16.0.1/v1",
    "http://100.64.0.1/v1",
    "http://224.0.0.1/v1",
    "http://240.0.0.1/v1",
    "https://user:secret@api.openai.com/v1",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_the_guard_refuses_every_private_form_of_an_address(url) -> None:
    with pytest.raises(OutboundRefused):
        check_url(url, STRICT)


def test_a_public_address_and_an_allowed_network_pass() -> None:
    check_url("http://93.184.216.34/v1", STRICT)
    check_url("http://127.0.0.1:8000/v1", LOOPBACK)
    check_url("http://vllm.lan:8000/v1", OutboundPolicy.parse(["vllm.lan"]))


@pytest.mark.django_db
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_saving_a_teacher_with_a_private_url_answers_422_naming_base_url(
    url, strict_outbound, api_client, alice, project
) -> None:
    client = api_client(alice)
    response = client.post(
        f"/api/v1/projects/{project.pk}/teachers",
        {"name": "T", "kind": "openai", "base_url": url, "model": "m"},
        content_type="application/json",
    )
    assert response.status_code == 422, response.content
    assert [e["field"] for e in response.json()["errors"]] == ["base_url"]

    teacher = TeacherFactory(project=project, base_url="https://api.openai.com/v1")
    response = client.patch(
        f"/api/v1/teachers/{teacher.pk}", {"base_url": url}, content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "base_url"
    teacher.refresh_from_db()
    assert teacher.base_url == "https://api.openai.com/v1"


@pytest.mark.django_db
def test_a_name_that_resolves_to_a_private_address_is_refused_when_saved(
    strict_outbound, fake_dns, project
) -> None:
    fake_dns["teacher.example"] = ["10.20.30.40"]
    with pytest.raises(ValidationError) as exc:
        services.teacher_create(
            project=project,
            name="T",
            kind="openai",
            base_url="https://teacher.example/v1",
            model="m",
        )
    assert "base_url" in exc.value.message_dict


def test_the_address_is_checked_at_connect_time_not_only_when_saved(fake_dns, http_server) -> None:
    """DNS rebinding: the name was public when saved, and answers loopback when called."""
    server = http_server()
    fake_dns["rebind.example"] = ["93.184.216.34"]
    check_url(f"http://rebind.example:{server.port}/v1", STRICT)  # saved: fine
    fake_dns["rebind.example"] = ["127.0.0.1"]
    client = openai.OpenAI(
        base_url=f"http://rebind.example:{server.port}/v1",
        api_key="k",
        max_retries=0,
        http_client=sync_client(STRICT),
    )
    with pytest.raises(openai.APIConnectionError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert isinstance(exc.value.__cause__.__cause__, OutboundRefused)
    assert server.paths == []  # nothing reached the loopback server


def test_every_resolved_address_must_pass_not_only_the_first(fake_dns, http_server) -> None:
    server = http_server()
    fake_dns["mixed.example"] = ["93.184.216.34", "127.0.0.1"]
    client = openai.OpenAI(
        base_url=f"http://mixed.example:{server.port}/v1",
        api_key="k",
        max_retries=0,
        http_client=sync_client(STRICT),
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert server.paths == []


def test_the_client_connects_to_the_address_it_checked(fake_dns, http_server) -> None:
    server = http_server()
    fake_dns["teacher.test"] = ["127.0.0.1"]
    client = openai.OpenAI(
        base_url=f"http://teacher.test:{server.port}/v1",
        api_key="k",
        max_retries=0,
        http_client=sync_client(LOOPBACK),
    )
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "hello from loopback"
    assert server.paths == ["/v1/chat/completions"]


@pytest.mark.django_db
def test_an_allowed_loopback_teacher_works(settings, project, http_server) -> None:
    server = http_server()
    settings.OUTBOUND_ALLOW = ["127.0.0.1/32"]
    teacher = services.teacher_create(
        project=project, name="Local vLLM", kind="openai", base_url=server.base_url, model="m"
    )
    result = teacher_test(teacher=teacher, prompt="hi")
    assert result.ok, result.error
    assert result.text == "hello from loopback"


@pytest.mark.django_db
def test_test_teacher_refuses_a_loopback_url_saved_before_the_rules(
    strict_outbound, project, http_server
) -> None:
    server = http_server()
    teacher = TeacherFactory(project=project, base_url=server.base_url)  # written past validation
    result = teacher_test(teacher=teacher, prompt="hi")
    assert not result.ok and "127.0.0.1" in result.error and "not a public address" in result.error
    assert server.paths == []


@pytest.mark.django_db
def test_a_redirect_is_not_followed(settings, project, http_server) -> None:
    target = http_server()
    redirect = http_server(
        lambda path: (307, {"Location": f"{target.base_url}/chat/completions"}, b"")
    )
    settings.OUTBOUND_ALLOW = ["127.0.0.1/32"]
    teacher = TeacherFactory(project=project, base_url=redirect.base_url)
    result = teacher_test(teacher=teacher, prompt="hi")
    assert not result.ok and "307" in result.error and "redirects are not followed" in result.error
    assert redirect.paths == ["/v1/chat/completions"] and target.paths == []


@pytest.mark.django_db
def test_a_foreign_error_body_never_reaches_the_user(settings, project, http_server) -> None:
    body = json.dumps({"error": {"message": "TOPSECRET internal token 123", "code": "denied"}})
    server = http_server(lambda path: (403, {"Content-Type": "application/json"}, body.encode()))
    settings.OUTBOUND_ALLOW = ["127.0.0.1/32"]
    teacher = TeacherFactory(project=project, base_url=server.base_url)
    result = teacher_test(teacher=teacher, prompt="hi")
    assert not result.ok and result.error.startswith("403 Forbidden")
    assert "TOPSECRET" not in result.error and "denied" in result.error


def test_generation_runs_refuse_a_private_teacher_without_sending(http_server) -> None:
    server = http_server()
    results: list = []

    async def sink(batch: list) -> None:
        results.extend(batch)

    config = RunnerConfig(
        base_url=server.base_url, model="m", max_attempts=1, concurrency=1, outbound=STRICT
    )
    asyncio.run(run_openai([WorkItem(1, 0, [{"role": "user", "content": "x"}])], config, sink=sink))
    assert len(results) == 1 and not results[0].ok
    assert "not a public address" in results[0].error
    assert server.paths == []

    results.clear()
    allowed = RunnerConfig(base_url=server.base_url, model="m", concurrency=1, outbound=LOOPBACK)
    asyncio.run(
        run_openai([WorkItem(1, 0, [{"role": "user", "content": "x"}])], allowed, sink=sink)
    )
    assert results[0].ok and results[0].text == "hello from loopback"


def test_the_judge_refuses_a_private_endpoint_without_sending(http_server) -> None:
    server = http_server(lambda path: chat_reply('{"score": 9, "rationale": "ok"}'))
    judge = JudgeClient(
        base_url=server.base_url, api_key="", model="m", rubric="R", outbound=STRICT
    )
    try:
        result = judge.judge_one(JudgeItem(1, "p", "c"))
    finally:
        judge.close()
    assert result.score is None and "APIConnectionError" in result.error
    assert server.paths == []
    allowed = JudgeClient(
        base_url=server.base_url, api_key="", model="m", rubric="R", outbound=LOOPBACK
    )
    try:
        assert allowed.judge_one(JudgeItem(1, "p", "c")).score == 9
    finally:
        allowed.close()


def test_make_run_allows_loopback_unless_the_operator_says_otherwise() -> None:
    from distillapp.core.management.commands.rundev import child_env

    assert "127.0.0.0/8" in child_env({})["DISTILLERY_OUTBOUND_ALLOW"]
    assert (
        child_env({"DISTILLERY_OUTBOUND_ALLOW": "10.0.0.0/8"})["DISTILLERY_OUTBOUND_ALLOW"]
        == "10.0.0.0/8"
    )
