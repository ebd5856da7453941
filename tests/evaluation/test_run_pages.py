"""Eval-run pages: launch form, dashboard (progress, leaderboard, chart data block, no inline
script), side by side with filters and escaping."""

from __future__ import annotations

import json
import re

import pytest

from distillapp.evaluation import run_services
from distillapp.evaluation.models import EvalAnswer, EvalItem, EvalRun
from distillapp.evaluation.run_services import ModelChoice
from tests.conftest import login


@pytest.fixture
def scored_run(project, api_teacher, eval_sets, sent_tasks):
    from workers.tasks.evaluation import run_eval

    run = run_services.eval_run_create(
        project=project,
        models=[ModelChoice(kind="teacher", id=api_teacher.pk)],
        eval_set_ids=[s.pk for s in eval_sets],
    )
    item = EvalItem.objects.filter(eval_set=eval_sets[0]).first()
    item.text = "<script>alert(1)</script>"
    item.save()
    assert run_eval.apply(args=(run.pk,)).get() == "succeeded"
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
def test_the_launch_form_starts_a_run_and_the_dashboard_shows_it(
    project, alice, api_teacher, eval_sets, sent_tasks
):
    client = login(alice)
    page = client.get(f"/projects/{project.pk}/eval-runs/new/")
    assert page.status_code == 200 and b"Fake GPT" in page.content
    response = client.post(
        f"/projects/{project.pk}/eval-runs/new/",
        {"model": [f"teacher:{api_teacher.pk}"], "eval_set": [eval_sets[0].pk], "max_tokens": "8"},
    )
    run = EvalRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/eval-runs/{run.pk}/"
    assert run.decoding["max_tokens"] == 8
    html = client.get(f"/eval-runs/{run.pk}/").content.decode()
    assert "every 2s" in html and "Queued" in html
    partial = client.get(f"/eval-runs/{run.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    response = client.post(
        f"/projects/{project.pk}/eval-runs/new/", {"eval_set": [eval_sets[0].pk]}
    )
    assert response.status_code == 200 and b"Choose at least one model" in response.content


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_and_side_by_side_render_scores_without_inline_script(scored_run, alice):
    client = login(alice)
    html = client.get(f"/eval-runs/{scored_run.pk}/").content.decode()
    assert 'id="leaderboard"' in html and 'id="contamination"' in html and 'id="safety"' in html
    assert "uPlot.iife.min.js" in html and "eval_dashboard.js" in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL)
    assert all(body.strip() == "" or 'type="application/json"' in attrs for attrs, body in scripts)
    assert not re.search(r"\s(on\w+|style)=", html)
    data = json.loads(re.search(r'id="eval-chart-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert data["points"][0]["cost_per_1k_usd"] > 0
    partial = client.get(f"/eval-runs/{scored_run.pk}/?partial=progress", HTTP_HX_REQUEST="true")
    assert partial.status_code == 286 and partial["HX-Refresh"] == "true"
    side = client.get(f"/eval-runs/{scored_run.pk}/samples/").content.decode()
    assert "hx-disable" in side and "&lt;script&gt;alert(1)&lt;/script&gt;" in side
    assert "<script>alert(1)" not in side
    weapons = client.get(f"/eval-runs/{scored_run.pk}/samples/?category=weapons").content.decode()
    assert weapons.count('class="card sample"') == 2
    assert EvalAnswer.objects.filter(run=scored_run).count() == 7
