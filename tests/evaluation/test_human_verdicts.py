"""Reviewers' own pairwise verdicts in the side-by-side viewer and the API, and the judge–human
agreement they give. The judge of `full_run` prefers the teacher in both orders, so every pair is
a loss for the candidate: the agreement with any set of human verdicts is known."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from distillapp.evaluation import reports
from distillapp.evaluation.human_verdicts import eval_human_verdict_set, judge_human_agreement
from distillapp.evaluation.models import EvalHumanVerdict, EvalItem
from tests.evaluation.test_eval_runs import full_run  # noqa: F401 - fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _items(run) -> list[EvalItem]:
    return list(EvalItem.objects.filter(eval_set__in=run.eval_sets.all()).order_by("id"))


def test_agreement_is_cohens_kappa_of_reviewer_verdicts_against_the_judge(
    full_run,  # noqa: F811
    student,
    alice,
):
    run, merged = full_run, f"student-{student.pk}-merged"
    items = _items(run)
    assert judge_human_agreement(run=run)["sources"]["pairwise"]["n"] == 0
    for item in items[:5]:
        eval_human_verdict_set(
            run=run, item_id=item.pk, model_key=merged, preferred="baseline", user=alice
        )
    for item in items[5:]:
        eval_human_verdict_set(
            run=run, item_id=item.pk, model_key=merged, preferred="candidate", user=alice
        )
    # The judge said "baseline" on all 7: raw 5/7; chance agreement is also 5/7, so kappa is 0.
    agreement = judge_human_agreement(run=run)
    assert agreement["n"] == 7 and agreement["raw"] == pytest.approx(5 / 7)
    assert agreement["kappa"] == pytest.approx(0.0) and "reviewers" in agreement["basis"]
    # Changing one's mind replaces the verdict: now 6 agree.
    eval_human_verdict_set(
        run=run, item_id=items[5].pk, model_key=merged, preferred="baseline", user=alice
    )
    assert EvalHumanVerdict.objects.filter(run=run).count() == 7
    assert judge_human_agreement(run=run)["raw"] == pytest.approx(6 / 7)
    # The files and the API read it live.
    assert reports.results_json(run)["judge_human_agreement"]["n"] == 7
    assert "on 7 items" in reports.report_html(run)


def test_bad_verdicts_are_refused_by_field(full_run, student, alice):  # noqa: F811
    from django.core.exceptions import ValidationError

    run, item = full_run, _items(full_run)[0]
    cases = {
        "model_key": {"item_id": item.pk, "model_key": run.baseline_key, "preferred": "tie"},
        "preferred": {
            "item_id": item.pk,
            "model_key": f"student-{student.pk}-merged",
            "preferred": "x",
        },
        "item_id": {
            "item_id": 10**9,
            "model_key": f"student-{student.pk}-merged",
            "preferred": "tie",
        },
    }
    for field, kwargs in cases.items():
        with pytest.raises(ValidationError) as info:
            eval_human_verdict_set(run=run, user=alice, **kwargs)
        assert field in info.value.message_dict
    assert not EvalHumanVerdict.objects.exists()


def test_a_reviewer_gives_verdicts_in_the_viewer_and_through_the_api(
    full_run,  # noqa: F811
    student,
    bob,
):
    run, merged = full_run, f"student-{student.pk}-merged"
    item = _items(run)[0]
    client = Client()
    client.force_login(bob)
    page = client.get(f"/eval-runs/{run.pk}/samples/?category=arithmetic")
    assert page.status_code == 200 and b'name="preferred" value="candidate"' in page.content
    response = client.post(
        f"/eval-runs/{run.pk}/review/verdict/",
        {
            "item_id": item.pk,
            "model_key": merged,
            "preferred": "tie",
            "next": f"/eval-runs/{run.pk}/samples/?category=arithmetic",
        },
    )
    assert response.status_code == 302
    assert (
        response["Location"] == f"/eval-runs/{run.pk}/samples/?category=arithmetic#item-{item.pk}"
    )
    again = client.get(f"/eval-runs/{run.pk}/samples/?category=arithmetic")
    assert b'value="tie" class="selected" aria-pressed="true"' in again.content
    # An off-site "next" is not followed.
    off = client.post(
        f"/eval-runs/{run.pk}/review/verdict/",
        {"item_id": item.pk, "model_key": merged, "preferred": "tie", "next": "https://evil.test/"},
    )
    assert off["Location"].startswith(f"/eval-runs/{run.pk}/samples/#item-")

    api = client.post(
        f"/api/v1/eval-runs/{run.pk}/review/verdicts",
        data=json.dumps({"item_id": item.pk, "model_key": merged, "preferred": "baseline"}),
        content_type="application/json",
    )
    assert api.status_code == 200, api.content
    body = api.json()
    assert body["preferred"] == "baseline" and body["agreement"]["n"] == 1
    assert body["agreement"]["raw"] == 1.0
    bad = client.post(
        f"/api/v1/eval-runs/{run.pk}/review/verdicts",
        data=json.dumps({"item_id": item.pk, "model_key": run.baseline_key, "preferred": "tie"}),
        content_type="application/json",
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "model_key"
    detail = client.get(f"/api/v1/eval-runs/{run.pk}").json()
    assert detail["results"]["agreement"]["n"] == 1


def test_viewers_see_no_verdict_buttons_and_cannot_post(full_run, student, vera):  # noqa: F811
    client = Client()
    client.force_login(vera)
    page = client.get(f"/eval-runs/{full_run.pk}/samples/")
    assert page.status_code == 200 and b'name="preferred"' not in page.content
    item = _items(full_run)[0]
    response = client.post(
        f"/eval-runs/{full_run.pk}/review/verdict/",
        {"item_id": item.pk, "model_key": f"student-{student.pk}-merged", "preferred": "tie"},
    )
    assert response.status_code == 403 and not EvalHumanVerdict.objects.exists()


def test_the_run_list_reads_agreement_in_queries_that_do_not_grow_with_runs(
    full_run,  # noqa: F811
    student,
    alice,
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from distillapp.evaluation.models import EvalRun

    run, merged = full_run, f"student-{student.pk}-merged"
    eval_human_verdict_set(
        run=run, item_id=_items(run)[0].pk, model_key=merged, preferred="baseline", user=alice
    )
    client = Client()
    client.force_login(alice)
    url = f"/api/v1/projects/{run.project_id}/eval-runs"

    def listing() -> tuple[dict[int, dict], int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200, response.content
        return {r["id"]: r for r in response.json()}, len(queries)

    def copy_of_run() -> EvalRun:
        sets = list(run.eval_sets.all())
        twin = EvalRun.objects.get(pk=run.pk)
        twin.pk = None
        twin.save()
        twin.eval_sets.set(sets)
        return twin

    copy_of_run()
    runs, few = listing()
    for _ in range(4):
        copy_of_run()
    runs, many = listing()
    assert len(runs) == 6 and many == few
    # The reviewed run's agreement is its reviewers'; the copies have none of their own.
    assert runs[run.pk]["results"]["agreement"]["n"] == 1
    assert runs[run.pk]["results"]["agreement"]["sources"]["pairwise"]["raw"] == 1.0
    copies = [r for pk, r in runs.items() if pk != run.pk]
    assert all(r["results"]["agreement"]["sources"]["pairwise"]["n"] == 0 for r in copies)
    assert all(r["eval_set_ids"] == runs[run.pk]["eval_set_ids"] for r in copies)
