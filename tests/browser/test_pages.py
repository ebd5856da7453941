"""The main pages in Chromium: no serious or critical axe-core violations, no Content Security
Policy violations, no 404s (favicon included), and the small behaviours moved out of inline
handlers (teacher kind fields, the samples placeholder, confirmations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillapp.accounts.models import Role
from distillapp.accounts.services import api_token_create
from tests.factories import (
    GenerationJobFactory,
    MembershipFactory,
    OrganizationFactory,
    ProjectFactory,
    PromptSetFactory,
    TeacherFactory,
    UserFactory,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
# Collects CSP violations from the start of every page (init scripts are not subject to the CSP).
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline") + " " + e.sourceFile + ":" + e.lineNumber);
});
"""


@pytest.fixture
def watched(browser, live_server):
    """A page with axe-core and a CSP-violation watcher injected, and a log of failed requests."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    context.add_init_script(path=str(AXE))
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.failed = []  # type: ignore[attr-defined]
    page.on(
        "response",
        lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"),  # type: ignore[attr-defined]
    )
    yield page
    context.close()


def _serious_axe_violations(page) -> list[str]:
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def _check_page(page) -> None:
    page.wait_for_load_state("networkidle")
    problems = _serious_axe_violations(page)
    assert not problems, "\n".join(problems)
    violations = page.evaluate("() => window.__cspViolations")
    assert violations == [], violations
    assert page.failed == [], page.failed  # type: ignore[attr-defined]


def _world():
    org = OrganizationFactory(name="Acme")
    owner = UserFactory(username="olga")
    MembershipFactory(user=owner, org=org, role=Role.OWNER)
    project = ProjectFactory(org=org, name="Support bot", created_by=owner)
    teacher = TeacherFactory(project=project, name="Big model", decoding={"n": 2})
    prompt_set = PromptSetFactory(project=project, name="Questions")
    GenerationJobFactory(project=project, teacher=teacher, prompt_set=prompt_set)
    return org, owner, project


def test_main_pages_pass_axe_and_the_csp(watched, log_in):
    org, _owner, project = _world()
    watched.goto("/login/")
    _check_page(watched)
    log_in(watched, "olga", "password", "/")
    for url in ["/", f"/projects/{project.pk}/", f"/orgs/{org.pk}/members/", "/account/tokens/"]:
        watched.goto(url)
        _check_page(watched)


def test_the_axe_check_can_fail(watched, log_in):
    _world()
    log_in(watched, "olga", "password", "/")
    watched.evaluate(
        "() => { const i = document.createElement('img'); i.src = '/static/favicon.svg';"
        " document.querySelector('main').append(i); }"
    )
    assert any("image-alt" in p for p in _serious_axe_violations(watched))


def test_favicon_is_served(watched, log_in):
    _world()
    log_in(watched, "olga", "password", "/")
    response = watched.request.get("/favicon.ico")
    assert response.ok and b"<svg" in response.body()


def test_api_docs_render_offline_and_try_it_works_with_a_bearer_token(watched, live_server):
    org, owner, _project = _world()
    _token, plain = api_token_create(user=owner, name="docs")
    # Nothing outside the live server may be loaded: a CDN request fails the test.
    outside: list[str] = []
    watched.route(
        lambda url: not url.startswith(live_server.url),
        lambda route: (outside.append(route.request.url), route.abort()),
    )
    watched.goto("/api/v1/docs")
    watched.wait_for_selector(".swagger-ui .info .title")
    assert "Distillery API" in watched.inner_text(".swagger-ui .info .title")
    watched.click("button.authorize")
    watched.fill(".modal-ux input[type=text]", plain)
    watched.click(".modal-ux button.authorize")
    watched.click(".modal-ux button.close-modal")
    operation = watched.locator(".opblock-get", has_text="/api/v1/orgs").first
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    body = operation.locator(".responses-wrapper .live-responses-table .microlight").first
    body.wait_for()
    assert json.loads(body.inner_text()) == [{"id": org.pk, "name": "Acme", "role": "owner"}]
    assert outside == []
    assert watched.evaluate("() => window.__cspViolations") == []


def test_teacher_form_shows_only_the_chosen_kinds_fields(watched, log_in):
    _org, _owner, project = _world()
    log_in(watched, "olga", "password", f"/projects/{project.pk}/teachers/new/")
    assert watched.is_visible("input[name=base_url]")
    assert watched.is_hidden("input[name=model_path]")
    watched.select_option("select[name=kind]", "hf_local")
    assert watched.is_hidden("input[name=base_url]")
    assert watched.is_visible("input[name=model_path]")
    _check_page(watched)


def test_launch_form_preselects_single_options_and_names_the_teachers_n(watched, log_in):
    _org, _owner, project = _world()
    log_in(watched, "olga", "password", f"/projects/{project.pk}/")
    form = watched.locator("form.launch-form")
    assert form.locator("select[name=teacher]").input_value() != ""
    assert form.locator("select[name=prompt_set]").input_value() != ""
    samples = form.locator("input[name=samples_per_prompt]")
    assert samples.get_attribute("placeholder") == "teacher's n (2)"


def test_confirmations_replace_inline_handlers(watched, log_in):
    _org, owner, _project = _world()
    api_token_create(user=owner, name="keep me")
    log_in(watched, "olga", "password", "/account/tokens/")
    watched.once("dialog", lambda dialog: dialog.dismiss())
    watched.click("text=Revoke")
    assert watched.locator("td", has_text="keep me").count() == 1
    assert owner.api_tokens.get().revoked_at is None
    watched.once("dialog", lambda dialog: dialog.accept())
    watched.click("text=Revoke")
    watched.wait_for_selector("text=Token revoked.")
    assert owner.api_tokens.get().revoked_at is not None


def test_the_csp_blocks_inline_code_and_the_watcher_sees_it(watched, log_in):
    _world()
    log_in(watched, "olga", "password", "/")
    watched.evaluate(
        "() => document.querySelector('main').insertAdjacentHTML('beforeend',"
        ' \'<img alt="" src="/static/favicon.svg" onload="window.__ran = true">\')'
    )
    watched.wait_for_function("() => window.__cspViolations.length > 0")
    assert watched.evaluate("() => window.__ran") is None
    assert watched.evaluate("() => window.__cspViolations")[0].startswith("script-src")
