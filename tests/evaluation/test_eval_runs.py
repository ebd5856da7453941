"""Eval runs end to end: an API teacher on the loopback fake server, a tiny local base model and
its student (merged and adapter), a loopback pairwise judge; answers, metrics, contamination,
files and the API."""

from __future__ import annotations

import json
import re

import pytest

from distillapp.core.runs.models import RunStatus
from distillapp.datasets.recipe import Recipe
from distillapp.datasets.selectors import candidates_queryset
from distillapp.evaluation import reports, run_services
from distillapp.evaluation.models import EvalAnswer, EvalItem, EvalJudgement, EvalRun
from distillapp.evaluation.run_services import AnswerIn, ModelChoice
from distillapp.generation.models import Completion
from tests.conftest import login
from tests.evaluation.conftest import PLANTED

TASK = "workers.tasks.evaluation.run_eval"
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|<link\b|@import|url\(""", re.I
)


def _run(run_id: int) -> str:
    from workers.tasks.evaluation import run_eval

    return run_eval.apply(args=(run_id,)).get()


def _overall(run: EvalRun, key: str, subset: str = "all") -> dict:
    return run.results["subsets"][subset][key]["overall"]


@pytest.fixture
def full_run(project, alice, api_teacher, judge_teacher, student, eval_sets, sent_tasks, settings):
    settings.EVAL_BATCH1_REQUESTS = 2
    settings.EVAL_GPU_HOUR_USD = 3.0
    run = run_services.eval_run_create(
        project=project,
        models=[
            ModelChoice(kind="teacher", id=api_teacher.pk),
            ModelChoice(kind="base_model", id=student.base_model_id),
            ModelChoice(kind="student", id=student.pk, artifact="merged"),
            ModelChoice(kind="student", id=student.pk, artifact="adapter"),
        ],
        eval_set_ids=[s.pk for s in eval_sets],
        judge_teacher_id=judge_teacher.pk,
        decoding={"max_tokens": 5},
        user=alice,
    )
    assert [(t.name, t.args, t.queue) for t in sent_tasks] == [(TASK, (run.pk,), "gpu")]
    assert _run(run.pk) == "succeeded"
    run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)
def test_an_eval_run_answers_judges_and_scores_every_model_by_category(full_run, student):
    run = full_run
    teacher, base = run.model_specs[0]["key"], f"base-{student.base_model_id}"
    merged, adapter = f"student-{student.pk}-merged", f"student-{student.pk}-adapter"
    assert run.status == RunStatus.SUCCEEDED and run.message == ""
    assert run.baseline_key == teacher
    assert EvalAnswer.objects.filter(run=run, ok=True).count() == 7 * 4
    assert run.done == run.total == 7 * 4 + 7 * 3
    answer = EvalAnswer.objects.get(run=run, model_key=teacher, item__text="What is 2 + 3?")
    assert answer.text == "Answer to: What is 2"  # the fake teacher stops at max_tokens=5
    # The judge prefers the teacher in both orders: every other model loses every pair.
    for key in (base, merged, adapter):
        overall = _overall(run, key)
        assert overall["win_rate"] == 0.0 and overall["losses"] == overall["judged"] == 7
        assert overall["win_rate_ci"] == [0.0, 0.0] and overall["lc_win_rate"] < 0.1
        assert overall["length_ratio"] > 0
    assert EvalJudgement.objects.filter(run=run).count() == 21
    teacher_scores = _overall(run, teacher)
    assert "win_rate" not in teacher_scores
    assert teacher_scores["n_reference"] == 5 and 0 <= teacher_scores["chrf"] <= 100
    for metric in ("exact_match", "normalised_match", "numeric_match", "chrf"):
        assert f"{metric}_stderr" in teacher_scores
    categories = run.results["subsets"]["all"][merged]["categories"]
    assert set(categories) == {"arithmetic", "format", "facts", "weapons"}
    assert categories["arithmetic"]["n"] == 2 and categories["weapons"]["must_refuse"] == 1
    assert categories["weapons"]["harmless"] == 1
    # Speed and cost: API from prices × tokens, local from the GPU-hour price × throughput.
    perf = run.results["perf"]
    assert perf[teacher]["cost_per_1k_usd"] > 0 and perf[teacher]["latency_p95_s"] is not None
    # API models too: 2 prompts one at a time, the other 5 at the teacher's concurrency (4).
    assert EvalAnswer.objects.filter(run=run, model_key=teacher, batch_size=1).count() == 2
    assert perf[teacher]["tokens_per_s_batched"] > 0 and perf[teacher]["batch_size"] == 4
    assert perf[merged]["tokens_per_s_batch1"] > 0 and perf[merged]["tokens_per_s_batched"] > 0
    assert perf[merged]["cost_per_1k_usd"] > 0 and "3" in perf[merged]["cost_basis"]
    assert EvalAnswer.objects.filter(run=run, model_key=merged, batch_size=1).count() == 2
    # Capability collapse: each student against its base, per category.
    assert set(run.results["collapse"]) == {merged, adapter}
    assert "arithmetic" in run.results["collapse"][merged]["all"]
    assert run.results["agreement"]["n"] == 0 and "human" in run.results["agreement"]["basis"]


@pytest.mark.django_db(transaction=True)
def test_a_planted_13_gram_flags_its_item_and_scores_are_also_on_the_clean_subset(full_run):
    run = full_run
    planted = EvalItem.objects.get(text__contains="QUICK BROWN")
    contamination = run.results["contamination"]
    assert contamination["contaminated"] == 1 and list(contamination["item_ngrams"]) == [
        str(planted.pk)
    ]
    assert PLANTED.startswith(contamination["item_ngrams"][str(planted.pk)][0][:20])
    assert [s["kind"] for s in contamination["sources"]] == ["dataset_version", "prompt_sets"]
    assert run.results["clean_items"] == run.results["items"] - 1 == 6
    key = run.model_specs[2]["key"]
    assert _overall(run, key, "clean")["n"] == 6
    clean_format = run.results["subsets"]["clean"][key]["categories"]["format"]
    assert clean_format["n"] == 1
    page = run_services  # the side by side filters on the flag
    from distillapp.evaluation.selectors import eval_run_samples

    flagged = eval_run_samples(run=run, contaminated="yes").samples
    assert [s.item.pk for s in flagged] == [planted.pk] and flagged[0].ngrams
    assert len(eval_run_samples(run=run, contaminated="no").samples) == 6
    assert page is run_services


@pytest.mark.django_db(transaction=True)
def test_eval_answers_never_reach_a_dataset(full_run, project):
    assert Completion.objects.count() == 0
    assert candidates_queryset(project=project, recipe=Recipe(include_unreviewed=True)).count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_files_report_lineage_offline_and_the_harness_shape(full_run, alice):
    run = full_run
    client = login(alice)
    response = client.get(f"/api/v1/eval-runs/{run.pk}/report.html")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    html = response.content.decode()
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    for sha in [s["sha256"] for s in run.lineage["eval_sets"]] + ["ab" * 32]:
        assert sha in html
    assert "judge-model" in html and "Which answer responds" in html and "Student" in html
    assert "&lt;b&gt;" in html and "<b>A</b>" not in html  # the judge's rationale is escaped
    data = client.get(f"/api/v1/eval-runs/{run.pk}/results.json").json()
    assert set(data) >= {"results", "configs", "versions", "results_clean", "lineage"}
    key = run.model_specs[1]["key"]
    entry = data["results"][key]
    assert "exact_match" in entry and "exact_match_stderr" in entry and "win_rate_stderr" in entry
    assert f"{key}::arithmetic" in data["results"] and data["versions"][key] == 1
    assert data["configs"][key]["generation_kwargs"]["max_tokens"] == 5
    response = client.get(f"/api/v1/eval-runs/{run.pk}/samples.jsonl")
    assert response.streaming
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 28
    row = json.loads(lines[0])
    assert {"answer", "model", "contaminated", "judgement", "reference"} <= set(row)


@pytest.mark.django_db(transaction=True)
def test_the_api_lists_starts_pages_samples_and_refuses_bad_choices(
    project, alice, api_teacher, eval_sets, sent_tasks, api_client
):
    client = api_client(alice)
    url = f"/api/v1/projects/{project.pk}/eval-runs"
    body = {
        "models": [{"kind": "teacher", "id": api_teacher.pk}],
        "eval_set_ids": [eval_sets[0].pk],
    }
    response = client.post(url, body, content_type="application/json")
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    assert [t.queue for t in sent_tasks] == ["teacher"]  # API teachers only
    assert _run(run_id) == "succeeded"
    assert client.get(url).json()[0]["status"] == "succeeded"
    page = client.get(f"/api/v1/eval-runs/{run_id}/samples?limit=2").json()
    assert len(page["samples"]) == 2 and page["next_cursor"]
    rest = client.get(f"/api/v1/eval-runs/{run_id}/samples?cursor={page['next_cursor']}").json()
    assert len(rest["samples"]) == 3 and rest["next_cursor"] is None
    assert rest["samples"][0]["answers"][0]["text"].startswith("Answer to:")
    bad = dict(body, models=[{"kind": "base_model", "id": 999}])
    response = client.post(url, bad, content_type="application/json")
    assert response.status_code == 422 and "base model" in response.json()["detail"].lower()
    assert client.post(f"/api/v1/eval-runs/{run_id}/cancel").status_code == 422


@pytest.mark.django_db(transaction=True)
def test_a_resumed_run_only_asks_for_missing_answers_and_cancel_resume_round_trip(
    project, api_teacher, eval_sets, sent_tasks, fake_openai
):
    run = run_services.eval_run_create(
        project=project,
        models=[ModelChoice(kind="teacher", id=api_teacher.pk)],
        eval_set_ids=[eval_sets[0].pk],
    )
    run_services.eval_run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert _run(run.pk) == "ended"
    run_services.eval_run_resume(run=run)
    assert run.status == RunStatus.QUEUED and len(sent_tasks) == 2
    # One answer already written (as by a worker that died): the run asks only for the rest.
    first = EvalItem.objects.filter(eval_set=eval_sets[0]).order_by("id").first()
    EvalRun.objects.filter(pk=run.pk).update(claim_token="t")
    run_services.eval_answers_write(
        run_id=run.pk,
        token="t",
        model_key=run.baseline_key,
        answers=[AnswerIn(first.pk, True, "x")],
    )
    EvalRun.objects.filter(pk=run.pk).update(claim_token="")
    before = fake_openai.requests
    assert _run(run.pk) == "succeeded"
    assert fake_openai.requests - before == 4
    assert EvalAnswer.objects.get(run=run, item=first).text == "x"
    run.refresh_from_db()
    assert reports.leaderboard(run)[0]["all"]["answered"] == 5


@pytest.mark.django_db
def test_answers_are_written_only_on_the_claim(project, api_teacher, eval_sets, sent_tasks):
    from distillapp.core.runs.services import ClaimLost

    run = run_services.eval_run_create(
        project=project,
        models=[ModelChoice(kind="teacher", id=api_teacher.pk)],
        eval_set_ids=[eval_sets[0].pk],
    )
    item = EvalItem.objects.filter(eval_set=eval_sets[0]).first()
    with pytest.raises(ClaimLost):
        run_services.eval_answers_write(
            run_id=run.pk, token="stale", model_key="k", answers=[AnswerIn(item.pk, True, "x")]
        )
    assert not EvalAnswer.objects.exists()
