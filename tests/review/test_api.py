from __future__ import annotations

import json

from distillapp.review.models import Review

JSON = "application/json"


def _next(client, project):
    return client.post(f"/api/v1/projects/{project.pk}/review/next")


def test_next_leases_a_completion_and_answers_204_when_none_is_left(
    project, bob, api_client, make_completions
):
    (c,) = make_completions(project, 1)
    client = api_client(bob)
    response = _next(client, project)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == c.pk and body["text"] == c.text
    assert body["prompt"] == {
        "id": c.prompt_id,
        "messages": [{"role": "user", "content": c.prompt.text}],
    }
    assert body["teacher"]["model"] == "teacher-model" and body["lease_expires_at"]
    assert set(body) >= {"job_id", "sample_index", "verdict", "siblings", "best_id", "mean_logprob"}

    decided = client.post(
        f"/api/v1/completions/{c.pk}/review", json.dumps({"decision": "approve"}), content_type=JSON
    )
    assert decided.status_code == 200
    assert decided.json()["decision"] == "approve" and decided.json()["reviewer"] == "bob"
    assert _next(client, project).status_code == 204


def test_review_is_idempotent_and_validates_input(project, bob, api_client, make_completions):
    (c,) = make_completions(project, 1)
    client = api_client(bob)
    _next(client, project)
    url = f"/api/v1/completions/{c.pk}/review"
    bad = client.post(url, json.dumps({"decision": "reject", "reason": "meh"}), content_type=JSON)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "reason"
    payload = json.dumps({"decision": "edit", "edited_text": "Better.", "duration_ms": 5})
    first = client.post(url, payload, content_type=JSON).json()
    second = client.post(url, payload, content_type=JSON).json()
    assert first["id"] == second["id"] and Review.objects.count() == 1
    assert second["original_text"] == c.text and second["edited_text"] == "Better."


def test_undo_and_stats(project, bob, api_client, make_completions):
    make_completions(project, 2)
    client = api_client(bob)
    c = _next(client, project).json()
    client.post(
        f"/api/v1/completions/{c['id']}/review",
        json.dumps({"decision": "approve"}),
        content_type=JSON,
    )
    stats = client.get(f"/api/v1/projects/{project.pk}/review/stats").json()
    assert stats["progress"]["done"] == 1 and stats["progress"]["remaining"] == 1
    assert stats["progress"]["mine"] == {"done": 1, "remaining": 1}
    assert stats["reviewers"][0]["username"] == "bob" and stats["reviewers"][0]["approve"] == 1
    assert set(stats["agreement"]) == {"method", "kappa", "items", "raters"}
    assert "judge_agreement" in stats

    undone = client.post(f"/api/v1/projects/{project.pk}/review/undo")
    assert undone.status_code == 200 and undone.json()["completion"]["id"] == c["id"]
    nothing = client.post(f"/api/v1/projects/{project.pk}/review/undo")
    assert nothing.status_code == 422 and nothing.json()["detail"] == "Nothing to undo."


def test_viewers_get_403_outsiders_404_and_anonymous_401(
    project, vera, charlie, api_client, client, make_completions
):
    (c,) = make_completions(project, 1)
    for user, status in ((vera, 403), (charlie, 404)):
        api = api_client(user)
        assert _next(api, project).status_code == status
        assert (
            api.post(
                f"/api/v1/completions/{c.pk}/review",
                json.dumps({"decision": "approve"}),
                content_type=JSON,
            ).status_code
            == status
        )
        assert api.post(f"/api/v1/projects/{project.pk}/review/undo").status_code == status
        assert api.get(f"/api/v1/projects/{project.pk}/review/stats").status_code == status
    assert client.post(f"/api/v1/projects/{project.pk}/review/next").status_code == 401
    assert (
        api_client(vera)
        .post(
            "/api/v1/completions/999999/review",
            json.dumps({"decision": "approve"}),
            content_type=JSON,
        )
        .status_code
        == 404
    )


def test_admins_and_owners_may_review_through_the_api(
    project, alice, adam, api_client, make_completions
):
    make_completions(project, 2)
    assert _next(api_client(alice), project).status_code == 200
    assert _next(api_client(adam), project).status_code == 200
