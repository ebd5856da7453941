"""The completions browser: filters, keyset pages, one completion in full, access, escaping."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillapp.datasets.completions_selectors import (
    CompletionFilters,
    completions_page,
    topk_summary,
)
from distillapp.filters.models import CompletionVerdict
from tests.conftest import login as login_client
from tests.datasets.conftest import topk_blob
from tests.factories import CompletionFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def _ids(project, **filters):
    page = completions_page(project=project, filters=CompletionFilters(**filters), limit=200)
    return {row["id"] for row in page.items}


def test_every_filter_narrows_to_the_matching_completions(project, alice, reviewed):
    c, hc = reviewed["c"], reviewed["hc"]
    everything = {x.pk for x in c.values()} | {hc.pk}
    assert _ids(project) == everything
    assert _ids(project, job=reviewed["job"].pk) == everything
    assert _ids(project, job=reviewed["job"].pk + 999) == set()
    assert _ids(project, prompt_set=reviewed["set"].pk) == everything
    assert _ids(project, status="failed") == set()
    assert _ids(project, review="edited") == {c[(1, 0)].pk}
    assert _ids(project, review="rejected") == {c[(1, 1)].pk}
    assert _ids(project, review="approved") == {
        c[k].pk for k in [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0), (3, 1)]
    } | {hc.pk}
    assert c[(2, 1)].pk in _ids(project, review="pending") | _ids(project, review="none")
    assert _ids(project, reviewer=alice.pk) == {
        c[k].pk for k in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (3, 0), (3, 1)]
    }
    assert _ids(project, score_min=8.5) == {c[(0, 1)].pk}
    assert _ids(project, score_max=3.5) == {c[(3, 1)].pk}
    assert _ids(project, score_min=5, score_max=8) == everything - {c[(0, 1)].pk, c[(3, 1)].pk}
    CompletionVerdict.objects.filter(completion=c[(2, 1)]).update(
        state="filtered", flags=["length"], reasons={"length": "Too long."}
    )
    assert _ids(project, verdict="filtered") == {c[(2, 1)].pk}
    assert _ids(project, flag="length") == {c[(2, 1)].pk}
    assert _ids(project, flag="language") == set()
    assert _ids(project, q="eight") == {c[(2, 1)].pk}
    assert _ids(project, review="approved", score_min=8.5) == {c[(0, 1)].pk}


def test_other_projects_completions_never_show(project, other_org, reviewed):
    other_project = ProjectFactory(org=other_org)
    foreign = CompletionFactory(job__project=other_project, job__prompt_set__project=other_project)
    assert foreign.pk not in _ids(project)


def test_keyset_pages_cover_everything_once_newest_first(project, reviewed):
    seen: list[int] = []
    cursor = None
    while True:
        page = completions_page(
            project=project, filters=CompletionFilters(), cursor=cursor, limit=3
        )
        seen += [row["id"] for row in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 9


def test_topk_summary_decodes_the_dtk1_record():
    summary = topk_summary(topk_blob(3))
    assert summary["tokens"] == 3 and summary["k"] == 2 and summary["tokens_with_topk"] == 3
    assert summary["token_ids"] is True
    assert summary["mean_logprob"] == pytest.approx(-0.5)
    assert topk_summary(topk_blob(2, strings=True))["token_ids"] is False
    assert "error" in topk_summary(b"not a record")
    assert topk_summary(None) is None


def test_the_topk_format_module_imports_neither_torch_nor_django():
    code = (
        "import sys; import workers.engine.topk_format; "
        "assert 'torch' not in sys.modules and 'django' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_page_and_api_list_and_open_one(client, api_client, alice, vera, project, reviewed):
    c = reviewed["c"]
    edited = c[(1, 0)]
    client.force_login(vera)
    r = client.get(f"/projects/{project.pk}/completions/", {"review": "edited"})
    assert r.status_code == 200
    assert f'data-completion="{edited.pk}"' in r.content.decode()
    assert f'data-completion="{c[(0, 0)].pk}"' not in r.content.decode()
    r = client.get(f"/projects/{project.pk}/completions/", {"score_min": "x"})
    assert r.status_code == 422
    r = client.get(f"/projects/{project.pk}/completions/", {"cursor": "forged"})
    assert r.status_code == 400
    page = client.get(f"/completions/{c[(0, 0)].pk}/").content.decode()
    assert "tokens with top-k" in page and "What is 2*2?" in page
    api = api_client(vera)
    body = api.get(f"/api/v1/projects/{project.pk}/completions", {"limit": 2}).json()
    assert len(body["items"]) == 2 and body["next_cursor"]
    more = api.get(
        f"/api/v1/projects/{project.pk}/completions", {"limit": 2, "cursor": body["next_cursor"]}
    ).json()
    assert more["items"][0]["id"] < body["items"][-1]["id"]
    bad = api.get(f"/api/v1/projects/{project.pk}/completions", {"review": "maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "review"
    assert api.get(f"/api/v1/projects/{project.pk}/completions", {"cursor": "x"}).status_code == 400
    detail = api.get(f"/api/v1/completions/{edited.pk}").json()
    assert detail["review"]["target_text"] == "<think>x</think>6 edited"
    assert detail["reviews"][0]["reviewer"] == alice.username
    assert detail["reviews"][0]["edited_text"] == "<think>x</think>6 edited"
    assert [s["id"] for s in detail["siblings"]] == [c[(1, 1)].pk]
    assert detail["topk"]["tokens"] == 2 and detail["verdict"]["judge_score"] == 7.0
    assert detail["prompt"]["messages"][-1]["content"] == "What is 2*3?"


def test_outsiders_get_404(api_client, client, charlie, project, reviewed):
    one = reviewed["c"][(0, 0)]
    client.force_login(charlie)
    assert client.get(f"/projects/{project.pk}/completions/").status_code == 404
    assert client.get(f"/completions/{one.pk}/").status_code == 404
    api = api_client(charlie)
    assert api.get(f"/api/v1/projects/{project.pk}/completions").status_code == 404
    assert api.get(f"/api/v1/completions/{one.pk}").status_code == 404


def test_model_output_is_escaped_and_htmx_disabled(client, alice, project, reviewed):
    hostile = '<img src=x onerror=alert(1)><a hx-get="/x">go</a>'
    one = CompletionFactory(job=reviewed["job"], prompt=reviewed["prompts"][0], sample_index=7)
    one.text = hostile
    one.save(update_fields=["text"])
    client.force_login(alice)
    for url in (f"/projects/{project.pk}/completions/", f"/completions/{one.pk}/"):
        html = client.get(url).content.decode()
        assert "<img src=x" not in html and "&lt;img src=x" in html
        assert "hx-disable" in html
    listing = client.get(f"/projects/{project.pk}/completions/").content.decode()
    row_start = listing.index(f'data-completion="{one.pk}"')
    assert "hx-disable" in listing[listing.rindex("<tr", 0, row_start) : row_start]


def test_resume_rebuilds_a_failed_version_page_and_api(
    project, alice, vera, reviewed, media, api_client, sent_tasks
):
    from distillapp.datasets.models import DatasetVersion
    from distillapp.datasets.services import dataset_create, dataset_version_build

    dataset = dataset_create(project=project, name="maths", user=alice)
    version = dataset_version_build(dataset=dataset, recipe={}, user=alice)
    DatasetVersion.objects.filter(pk=version.pk).update(status="failed", message="Boom.")
    page = api_client(alice)
    viewer = api_client(vera)
    assert viewer.post(f"/api/v1/dataset-versions/{version.pk}/resume").status_code == 403
    r = page.post(f"/api/v1/dataset-versions/{version.pk}/resume")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    again = page.post(f"/api/v1/dataset-versions/{version.pk}/resume")
    assert again.status_code == 422 and again.json()["detail"]
    DatasetVersion.objects.filter(pk=version.pk).update(status="cancelled")
    client = login_client(alice)
    html = client.get(f"/dataset-versions/{version.pk}/").content.decode()
    assert 'id="resume-build"' in html
    r = client.post(f"/dataset-versions/{version.pk}/resume/")
    assert r.status_code == 302
    assert DatasetVersion.objects.get(pk=version.pk).status == "queued"


def test_licence_set_on_the_datasets_page_goes_into_the_card(
    project, alice, vera, reviewed, media, sent_tasks
):
    from distillapp.projects.models import Project

    assert (
        login_client(vera)
        .post(f"/projects/{project.pk}/datasets/license/", {"license": "mit"})
        .status_code
        == 403
    )
    client = login_client(alice)
    client.post(f"/projects/{project.pk}/datasets/license/", {"license": "bad licence!"})
    assert "license" not in Project.objects.get(pk=project.pk).settings
    client.post(f"/projects/{project.pk}/datasets/license/", {"license": "cc-by-4.0"})
    assert Project.objects.get(pk=project.pk).settings["license"] == "cc-by-4.0"
    assert 'value="cc-by-4.0"' in client.get(f"/projects/{project.pk}/datasets/").content.decode()
    from distillapp.datasets.build import dataset_version_execute
    from distillapp.datasets.services import dataset_create, dataset_version_build, version_folder

    version = dataset_version_build(
        dataset=dataset_create(project=project, name="lic", user=alice), recipe={}, user=alice
    )
    built = dataset_version_execute(version_id=version.pk)
    assert built is not None and built.lineage["license"] == "cc-by-4.0"
    assert 'license: "cc-by-4.0"' in (version_folder(built) / "README.md").read_text()
