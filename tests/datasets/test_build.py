"""Building versions: selection rules, files, content address, lineage, immutability, held-out."""

from __future__ import annotations

import json
import zipfile

import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError

from distillapp.datasets import build as build_module
from distillapp.datasets import services
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.recipe import recipe_parse
from distillapp.datasets.selectors import dataset_rows, recipe_preview
from distillapp.datasets.services import version_folder
from distillapp.generation.models import Completion, GenerationJob, Teacher
from distillapp.prompts.models import PromptSet
from tests.datasets.conftest import decide
from workers.engine.data import load_records

pytestmark = pytest.mark.django_db


def build(dataset, user, sent_tasks, recipe=None):
    version = services.dataset_version_build(dataset=dataset, recipe=recipe or {}, user=user)
    task = sent_tasks[-1]
    assert task.name == "workers.tasks.datasets.build_dataset_version"
    assert task.queue == "default"
    from workers.tasks.datasets import build_dataset_version

    assert build_dataset_version(*task.args) == "succeeded"
    version.refresh_from_db()
    return version


@pytest.fixture
def dataset(project, alice):
    return services.dataset_create(project=project, name="maths", user=alice)


def _rows(version):
    return pq.read_table(version_folder(version) / "rows.parquet").to_pylist()


def _folder_bytes(version):
    folder = version_folder(version)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_empty_recipe_takes_every_approved_pair_with_edits_winning(
    project, alice, reviewed, dataset, sent_tasks
):
    version = build(dataset, alice, sent_tasks)
    rows = _rows(version)
    c = reviewed["c"]
    by_completion = {r["completion_id"]: r for r in rows}
    assert set(by_completion) == {c[k].pk for k in [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0)]}
    assert by_completion[c[(1, 0)].pk]["completion"] == "<think>x</think>6 edited"
    assert by_completion[c[(1, 0)].pk]["source"] == "edited"
    assert by_completion[c[(1, 0)].pk]["teacher_exact"] is False
    # the rejected sample and the unreviewed one are out; the identical pair was dropped once
    assert c[(1, 1)].pk not in by_completion and c[(2, 1)].pk not in by_completion
    assert version.counts["rows"] == 5
    assert version.counts["dropped"] == {"duplicates": 1}
    assert len(version.sha256) == 64


def test_held_out_prompts_never_enter_even_when_a_recipe_names_them(
    project, alice, reviewed, dataset, sent_tasks
):
    heldout = reviewed["heldout"]
    # A forged recipe: it names the job holding the forged approval of a held-out prompt, and
    # tries to name the held-out prompt itself.
    with pytest.raises(ValidationError) as err:
        services.dataset_version_build(
            dataset=dataset,
            recipe={"jobs": [reviewed["job"].pk], "prompts": [heldout.pk]},
            user=alice,
        )
    assert "prompts" in err.value.message_dict
    version = build(
        dataset, alice, sent_tasks, {"jobs": [reviewed["job"].pk], "include_unreviewed": True}
    )
    rows = _rows(version)
    assert rows and heldout.pk not in {r["prompt_id"] for r in rows}
    assert all("secret answer" not in r["completion"] for r in rows)
    for name in ("train.jsonl", "validation.jsonl"):
        assert "secret answer" not in (version_folder(version) / name).read_text()
    preview = recipe_preview(project=project, recipe=recipe_parse({}))
    assert preview["rows"] == 5


def test_the_build_refuses_a_held_out_prompt_that_slips_past_the_query(
    project, alice, reviewed, dataset, sent_tasks, monkeypatch
):
    from distillapp.prompts.models import Prompt, Split

    class Leaky(build_module.RowBatches):
        """The build's rows, with the first prompt swapped for the held-out one."""

        def __iter__(self):
            for batch in super().__iter__():
                batch.prompt_ids = batch.prompt_ids.copy()
                batch.prompt_ids[0] = reviewed["heldout"].pk
                yield batch

    monkeypatch.setattr(build_module, "RowBatches", Leaky)
    assert Prompt.objects.get(pk=reviewed["heldout"].pk).split == Split.HELDOUT
    version = services.dataset_version_build(dataset=dataset, recipe={}, user=alice)
    from workers.tasks.datasets import build_dataset_version

    with pytest.raises(Exception, match="held-out"):
        build_dataset_version(version.pk)
    version.refresh_from_db()
    assert version.status == "failed"
    assert not version_folder(version).exists()
    assert not list(version_folder(version).parent.glob(".*tmp-*"))


def test_recipe_options_one_per_prompt_reasoning_and_split(
    project, alice, reviewed, dataset, sent_tasks
):
    c = reviewed["c"]
    recipe = recipe_parse({"per_prompt": "one", "include_unreviewed": True})
    rows = list(dataset_rows(project=project, recipe=recipe))
    picked = {r.prompt_id: r.completion_id for r in rows}
    # p0: judge 9 beats 7; p2: both 7, lowest sample index; p3: 7 beats 3
    assert picked[reviewed["prompts"][0].pk] == c[(0, 1)].pk
    assert picked[reviewed["prompts"][2].pk] == c[(2, 0)].pk
    assert picked[reviewed["prompts"][3].pk] == c[(3, 0)].pk

    stripped = list(dataset_rows(project=project, recipe=recipe_parse({"reasoning": "strip"})))
    assert {r.target for r in stripped} >= {"6 edited", "8", "11"}
    assert all("<think>" not in r.target for r in stripped)
    edited = next(r for r in stripped if r.completion_id == c[(1, 0)].pk)
    assert not edited.teacher_exact and not edited.has_topk

    matched = list(
        dataset_rows(project=project, recipe=recipe_parse({"reasoning": "match_reference"}))
    )
    assert {r.completion_id for r in matched} == {c[(0, 0)].pk, c[(2, 0)].pk}

    many = recipe_parse({"validation_fraction": 0.5, "seed": 3})
    split = {}
    for r in dataset_rows(project=project, recipe=many):
        split.setdefault(r.prompt_id, set()).add(r.split)
    assert all(len(s) == 1 for s in split.values())  # no prompt in both
    again = {r.prompt_id: r.split for r in dataset_rows(project=project, recipe=many)}
    assert again == {p: next(iter(s)) for p, s in split.items()}

    scored = list(dataset_rows(project=project, recipe=recipe_parse({"min_judge_score": 8})))
    assert [r.completion_id for r in scored] == [c[(0, 1)].pk]


def test_topk_rows_only_for_the_teachers_own_output_and_engine_reads_the_files(
    project, alice, reviewed, dataset, sent_tasks
):
    c = reviewed["c"]
    version = build(dataset, alice, sent_tasks)
    rows = {r["completion_id"]: r for r in _rows(version)}
    assert rows[c[(0, 0)].pk]["kd"] is True and rows[c[(0, 0)].pk]["topk_length"]
    assert rows[c[(0, 1)].pk]["kd"] is False  # token strings: not usable for logit KD
    assert rows[c[(0, 1)].pk]["topk_length"]  # but kept in the shard
    assert rows[c[(1, 0)].pk]["topk_length"] is None  # edited: no teacher distribution
    assert version.counts["kd_rows"] == 1
    assert version.counts["topk_rows"] == 2
    folder = version_folder(version)
    sft = load_records(str(folder / "train.jsonl"), "sft")
    assert len(sft) == 5
    kd = load_records(str(folder / "train_kd.jsonl"), "kd")
    assert len(kd) == 1
    assert list(kd[0].token_ids) == [5]


def test_same_data_same_sha_and_files_are_listed(project, alice, reviewed, dataset, sent_tasks):
    v1 = build(dataset, alice, sent_tasks)
    v2 = build(dataset, alice, sent_tasks)
    assert (v1.number, v2.number) == (1, 2)
    assert v2.parent_id == v1.pk
    assert v1.sha256 == v2.sha256
    assert v2.diff["added"] == 0 and v2.diff["removed"] == 0 and v2.diff["unchanged"] == 5
    for name in ("rows.parquet", "train.jsonl", "topk.bin", "manifest.json", "README.md"):
        assert name in v1.files
    manifest = json.loads((version_folder(v1) / "manifest.json").read_text())
    assert manifest["sha256"] == v1.sha256


def test_lineage_is_copied(project, alice, reviewed, dataset, sent_tasks):
    version = build(dataset, alice, sent_tasks, {"per_prompt": "one"})
    lineage = version.lineage
    assert lineage["prompt_sets"][0]["sha256"] == "ab" * 32
    snap = lineage["jobs"][0]["teacher_snapshot"]
    assert snap["decoding"] == {"temperature": 0.7} and "api_key_last4" not in snap
    assert lineage["recipe"]["per_prompt"] == "one"
    assert lineage["reviews"]["by_reviewer"] == [
        {"reviewer": "alice", "decisions": {"approve": 5, "edit": 1, "reject": 1}}
    ]
    assert lineage["filters"]["verdicts_of_rows"] == {"passed": 4}
    assert lineage["built_by"] == "alice"
    assert "enabled" in lineage["filters"]["config"]


def test_a_version_never_changes_after_later_decisions_and_deletions(
    project, alice, reviewed, dataset, sent_tasks, api_client
):
    version = build(dataset, alice, sent_tasks)
    before_files = _folder_bytes(version)
    client = api_client(alice)
    before_api = client.get(f"/api/v1/dataset-versions/{version.pk}").json()
    # Later: a decision on the unreviewed sample, an edited teacher, the job and set deleted.
    decide(project, alice, reviewed["c"][(2, 1)], "approve")
    Teacher.objects.filter(project=project).update(decoding={"temperature": 0.0}, model="other")
    GenerationJob.objects.filter(pk=reviewed["job"].pk).delete()
    PromptSet.objects.filter(pk=reviewed["set"].pk).delete()
    assert not Completion.objects.exists()
    version = DatasetVersion.objects.get(pk=version.pk)
    assert _folder_bytes(version) == before_files
    assert client.get(f"/api/v1/dataset-versions/{version.pk}").json() == before_api
    assert before_api["lineage"]["jobs"][0]["teacher_snapshot"]["model"] == "teacher-model"
    # and the next version sees the change as a diff against this one
    v2 = build(dataset, alice, sent_tasks)
    assert v2.counts["rows"] == 0 and v2.diff["removed"] == 5
    assert len(v2.diff["examples"]["removed"]) == 5


def test_diff_counts_added_and_changed_rows(project, alice, reviewed, dataset, sent_tasks):
    v1 = build(dataset, alice, sent_tasks)
    decide(project, alice, reviewed["c"][(1, 0)], "edit", "6, edited again")
    v2 = build(dataset, alice, sent_tasks, {"include_unreviewed": True})
    assert v2.diff["changed"] == 1 and v2.diff["added"] == 1 and v2.diff["removed"] == 0
    changed = v2.diff["examples"]["changed"][0]
    assert changed["completion"] == "6, edited again"
    assert changed["before"] == "<think>x</think>6 edited"
    assert v1.sha256 != v2.sha256


def test_a_killed_build_leaves_nothing_visible_and_is_rebuilt(
    project, alice, reviewed, dataset, sent_tasks, monkeypatch, settings
):
    from distillapp.core.runs.services import run_claim
    from distillapp.datasets import writer

    version = services.dataset_version_build(dataset=dataset, recipe={}, user=alice)

    def die(self):
        raise SystemExit("worker killed")

    monkeypatch.setattr(writer.VersionWriter, "close", die)
    with pytest.raises(SystemExit):
        build_module.dataset_version_execute(version_id=version.pk)
    monkeypatch.undo()
    version.refresh_from_db()
    # The dead worker had no chance to record anything: the run still looks claimed.
    assert version.status in ("running", "failed")
    assert not version_folder(version).exists()
    # Simulate a dead worker's leftovers, then the sweep's takeover after the heartbeat went stale.
    leftover = version_folder(version).with_name(f".{version.number}.tmp-dead")
    leftover.mkdir(parents=True)
    (leftover / "rows.parquet").write_bytes(b"partial")
    DatasetVersion.objects.filter(pk=version.pk).update(status="running", heartbeat_at=None)
    settings.RUN_STALE_SECONDS = 0
    assert run_claim  # the task below claims through the lifecycle
    from workers.tasks.datasets import build_dataset_version

    assert build_dataset_version(version.pk) == "succeeded"
    assert not leftover.exists()
    version.refresh_from_db()
    assert version.counts["rows"] == 5


def test_hf_export_loads_with_datasets(project, alice, reviewed, dataset, sent_tasks, tmp_path):
    datasets = pytest.importorskip("datasets")
    version = build(dataset, alice, sent_tasks, {"validation_fraction": 0.5, "seed": 1})
    with zipfile.ZipFile(version_folder(version) / "hf.zip") as zf:
        zf.extractall(tmp_path)
    loaded = datasets.load_from_disk(str(tmp_path / "dataset"))
    total = sum(loaded[s].num_rows for s in loaded)
    assert total == 5
    first = loaded["train"][0]["messages"]
    assert first[0]["role"] == "user" and first[-1]["role"] == "assistant"
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert version.sha256 in card and "maths.jsonl" in card


def test_delete_removes_files_and_refuses_while_building(
    project, alice, reviewed, dataset, sent_tasks, django_capture_on_commit_callbacks
):
    version = build(dataset, alice, sent_tasks)
    folder = version_folder(version)
    assert folder.exists()
    with django_capture_on_commit_callbacks(execute=True):
        services.dataset_version_delete(version=version)
    assert not DatasetVersion.objects.filter(pk=version.pk).exists()
    assert not folder.exists()
    running = services.dataset_version_build(dataset=dataset, recipe={}, user=alice)
    DatasetVersion.objects.filter(pk=running.pk).update(status="running")
    running.refresh_from_db()
    with pytest.raises(ValidationError):
        services.dataset_version_delete(version=running)


def test_delete_is_refused_when_a_training_run_uses_the_version(
    project, alice, reviewed, dataset, sent_tasks, monkeypatch
):
    version = build(dataset, alice, sent_tasks)
    monkeypatch.setattr(services, "version_in_use", lambda *, version: "Used by training run 1.")
    with pytest.raises(ValidationError, match="training run"):
        services.dataset_version_delete(version=version)
    assert version_folder(version).exists()


def test_recipe_validation(project, reviewed):
    with pytest.raises(ValidationError) as err:
        recipe_parse({"per_prompt": "many", "validation_fraction": 2, "min_judge_score": "x"})
    assert set(err.value.message_dict) == {"per_prompt", "validation_fraction", "min_judge_score"}
    other = GenerationJob.objects.exclude(project=project).first()
    assert other is None
    with pytest.raises(ValidationError):
        services.dataset_recipe_validate(project=project, data={"jobs": [reviewed["job"].pk + 999]})


def test_an_empty_version_has_a_loadable_hf_export(
    project, alice, reviewed, dataset, sent_tasks, tmp_path
):
    datasets = pytest.importorskip("datasets")
    version = build(dataset, alice, sent_tasks, {"min_judge_score": 100})
    assert version.counts["rows"] == 0
    with zipfile.ZipFile(version_folder(version) / "hf.zip") as zf:
        zf.extractall(tmp_path)
    loaded = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert list(loaded) == ["train"] and loaded["train"].num_rows == 0


def test_the_hf_layout_is_kept_per_datasets_version(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from distillapp.datasets import exports

    monkeypatch.setattr(exports, "_HF_LAYOUTS", {})
    made = exports.hf_layout(cache=tmp_path)
    assert made is not None and list(tmp_path.glob("hf-layout-*.json"))
    monkeypatch.setattr(exports, "_HF_LAYOUTS", {})
    monkeypatch.setattr(exports, "_hf_layout_from_datasets", lambda: pytest.fail("not cached"))
    assert exports.hf_layout(cache=tmp_path) == made


def test_the_diff_merges_parent_and_new_rows_across_batches(tmp_path):
    import numpy as np
    import pyarrow as pa

    from distillapp.datasets import writer

    parent = [(1, 1, "a"), (1, 2, "b"), (2, 3, "c"), (4, 5, "d"), (4, 6, "e"), (9, 9, "f")]
    pq.write_table(
        pa.table(
            {
                "prompt_id": [p for p, _, _ in parent],
                "completion_id": [c for _, c, _ in parent],
                "row_key": [f"{p}:{c}" for p, c, _ in parent],
                "row_sha256": [s for _, _, s in parent],
            }
        ),
        tmp_path / "parent.parquet",
    )
    rows = writer.ParentRows(tmp_path / "parent.parquet", examples=2, batch_size=2)
    kinds = []
    for batch in ([(1, 2, "b"), (2, 3, "x")], [(3, 1, "n")], [(4, 6, "e"), (5, 1, "n")]):
        kinds += rows.match(
            np.array([p for p, _, _ in batch]),
            np.array([c for _, c, _ in batch]),
            [s for _, _, s in batch],
        ).tolist()
    rows.finish()
    assert kinds == [writer.UNCHANGED, writer.CHANGED, writer.ADDED, writer.UNCHANGED, writer.ADDED]
    assert rows.removed == 3 and rows.removed_examples == ["1:1", "4:5"]
