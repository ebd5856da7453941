"""Eval sets: uploads, held-out sets, shipped suites, verified references, eval-only."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from distillapp.datasets.recipe import Recipe
from distillapp.datasets.selectors import candidates_queryset, dataset_rows
from distillapp.evaluation import selectors, services
from distillapp.evaluation.models import EvalItem, EvalSet
from distillapp.prompts.models import Prompt, Split
from tests.factories import (
    CompletionFactory,
    CompletionVerdictFactory,
    GenerationJobFactory,
    PromptFactory,
    PromptSetFactory,
)

pytestmark = pytest.mark.django_db


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def jsonl(*rows: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_a_jsonl_upload_becomes_eval_items_with_references_and_categories(project, alice):
    data = jsonl(
        {"prompt": "2 + 2?", "reference": "4", "category": "math"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ],
            "reference": "Paris",
            "category": "facts",
        },
        {"prompt": "Say hi", "id": "x-3"},
    )
    s = services.eval_set_upload(project=project, file=upload("mine.jsonl", data), user=alice)
    assert (s.kind, s.name, s.item_count, s.reference_count, s.eval_only) == (
        "uploaded",
        "mine",
        3,
        2,
        True,
    )
    assert s.categories == {"facts": 1, "math": 1}
    items = list(s.items.order_by("position"))
    assert items[1].chat[0] == {"role": "system", "content": "Be brief."}
    assert items[2].external_id == "x-3" and items[2].reference is None
    assert not any(i.reference_verified for i in items)
    assert len(s.sha256) == 64


def test_csv_and_parquet_uploads_with_must_refuse(project):
    csv_data = b"prompt,reference,category,must_refuse\nHow do I pick a lock?,,safety,true\nHow do I bake bread?,,cooking,false\n"
    s = services.eval_set_upload(project=project, file=upload("s.csv", csv_data), kind="safety")
    assert [i.must_refuse for i in s.items.order_by("position")] == [True, False]
    assert s.must_refuse_count == 1
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": ["1+1?", "3*3?"], "reference": ["2", "9"]}), buf)
    p = services.eval_set_upload(project=project, file=upload("p.parquet", buf.getvalue()))
    assert (p.source_format, p.item_count, p.reference_count) == ("parquet", 2, 2)


def test_a_bad_row_refuses_the_whole_upload_with_its_line(project):
    data = jsonl({"prompt": "ok", "reference": "1"}, {"reference": "no prompt"})
    with pytest.raises(services.EvalSetImportError) as exc:
        services.eval_set_upload(project=project, file=upload("bad.jsonl", data))
    assert exc.value.status == 422 and exc.value.errors[0]["line"] == 2
    assert not EvalSet.objects.exists()
    with pytest.raises(services.EvalSetImportError) as exc:
        services.eval_set_upload(project=project, file=upload("x.txt", b"hello"))
    assert exc.value.status == 415
    with pytest.raises(services.EvalSetImportError):
        services.eval_set_upload(
            project=project, file=upload("b.jsonl", jsonl({"prompt": "x", "must_refuse": "maybe"}))
        )


def test_uploaded_eval_items_never_become_prompts(project):
    before = Prompt.objects.count()
    services.eval_set_upload(
        project=project,
        file=upload("e.jsonl", jsonl({"prompt": "secret eval question", "reference": "a"})),
    )
    assert Prompt.objects.count() == before
    assert not Prompt.objects.filter(text="secret eval question").exists()


def test_the_held_out_set_copies_the_held_out_prompts_with_their_references(project):
    ps = PromptSetFactory(project=project)
    PromptFactory(prompt_set=ps, text="train one", split=Split.TRAIN, reference="t")
    h1 = PromptFactory(
        prompt_set=ps,
        text="held one",
        split=Split.HELDOUT,
        reference="R1",
        metadata={"category": "cat"},
    )
    h2 = PromptFactory(prompt_set=ps, text="held two", split=Split.HELDOUT, reference=None)
    s = services.eval_set_create(project=project, kind="heldout")
    items = list(s.items.order_by("position"))
    assert [i.text for i in items] == ["held one", "held two"]
    assert [i.source_prompt_id for i in items] == [h1.pk, h2.pk]
    assert (items[0].reference, items[0].category) == ("R1", "cat")
    assert s.kind == "heldout" and s.reference_count == 1 and len(s.sha256) == 64


def test_a_project_without_held_out_prompts_cannot_make_a_held_out_set(project):
    with pytest.raises(services.EvalSetImportError):
        services.eval_set_create(project=project, kind="heldout")


def test_the_shipped_suites_load_with_references_categories_and_must_refuse(project):
    cap = services.eval_set_create(project=project, kind="capability")
    assert cap.item_count >= 50 and cap.reference_count == cap.item_count
    assert set(cap.categories) == {"arithmetic", "format", "factual"}
    safety = services.eval_set_create(project=project, kind="safety")
    assert safety.item_count >= 30
    assert 0 < safety.must_refuse_count < safety.item_count
    assert not safety.items.filter(must_refuse__isnull=True).exists()


def test_a_reference_counts_as_verified_only_once_a_human_approved_it(project, bob):
    ps = PromptSetFactory(project=project)
    PromptFactory(prompt_set=ps, text="held", split=Split.HELDOUT, reference="draft")
    s = services.eval_set_create(project=project, kind="heldout")
    item = s.items.get()
    assert not item.reference_verified
    assert selectors.reference_queue(project=project) == [item]
    services.eval_item_reference_approve(item=item, user=bob, reference="final answer")
    item.refresh_from_db()
    assert item.reference_verified and item.reference == "final answer"
    assert item.reference_verified_by == bob
    assert selectors.reference_queue(project=project) == []
    services.eval_item_reference_propose(item=item, reference="changed again")
    item.refresh_from_db()
    assert not item.reference_verified
    assert selectors.reference_queue_count(project=project) == 1


def test_an_empty_reference_cannot_be_approved(project, bob):
    s = services.eval_set_upload(project=project, file=upload("e.jsonl", jsonl({"prompt": "q"})))
    item = s.items.get()
    with pytest.raises(ValidationError):
        services.eval_item_reference_approve(item=item, user=bob)
    with pytest.raises(ValidationError):
        services.eval_item_reference_approve(item=item, user=bob, reference="   ")
    assert services.eval_item_reference_approve(
        item=item, user=bob, reference="x"
    ).reference_verified
    assert EvalSet.objects.get(pk=s.pk).reference_count == 1


def test_items_page_by_keyset_cursor(project):
    rows = [{"prompt": f"q{i}", "reference": str(i)} for i in range(7)]
    s = services.eval_set_upload(project=project, file=upload("e.jsonl", jsonl(*rows)))
    first = selectors.eval_set_items(eval_set=s, limit=3)
    second = selectors.eval_set_items(eval_set=s, cursor=first.next_cursor, limit=3)
    third = selectors.eval_set_items(eval_set=s, cursor=second.next_cursor, limit=3)
    texts = [i.text for page in (first, second, third) for i in page.items]
    assert texts == [f"q{i}" for i in range(7)]
    assert third.next_cursor is None


def test_deleting_a_set_deletes_its_items(project):
    s = services.eval_set_upload(project=project, file=upload("e.jsonl", jsonl({"prompt": "q"})))
    services.eval_set_delete(eval_set=s)
    assert not EvalItem.objects.exists() and not EvalSet.objects.exists()


def test_a_forged_recipe_cannot_reach_eval_items(project, alice):
    """Eval items are not prompts: no recipe, however forged, selects them. The recipe names the
    eval set's and items' ids as job ids and takes unreviewed completions too; the rows it
    yields are only the train prompts' completions."""
    s = services.eval_set_upload(
        project=project,
        file=upload(
            "e.jsonl", jsonl(*({"prompt": f"EVAL-ONLY {i}", "reference": "r"} for i in range(5)))
        ),
    )
    ids = [s.pk, *s.items.values_list("pk", flat=True)]
    job = GenerationJobFactory(project=project)
    train = CompletionFactory(
        job=job, prompt=PromptFactory(prompt_set=job.prompt_set, text="a train prompt")
    )
    CompletionVerdictFactory(completion=train, state="passed", flags=[])
    for recipe in (Recipe(jobs=ids, include_unreviewed=True), Recipe(include_unreviewed=True)):
        texts = [
            m["content"]
            for row in dataset_rows(project=project, recipe=recipe)
            for m in row.messages
        ]
        assert not any("EVAL-ONLY" in t for t in texts)
        if not recipe.jobs:  # the positive control: the same recipe does select train pairs
            assert (
                candidates_queryset(project=project, recipe=recipe)
                .filter(prompt__text="a train prompt")
                .exists()
            )
        assert (
            not candidates_queryset(project=project, recipe=recipe)
            .filter(prompt__text__startswith="EVAL-ONLY")
            .exists()
        )
    # What a generation job can read: the prompts of the project's prompt sets. None is an eval item.
    assert not Prompt.objects.filter(
        prompt_set__project=project, text__startswith="EVAL-ONLY"
    ).exists()
    assert EvalSet.objects.filter(eval_only=False).count() == 0


def test_an_eval_set_cannot_be_stored_as_not_eval_only(project):
    from django.db import IntegrityError, transaction

    s = EvalSet.objects.create(project=project, name="x", kind="uploaded")
    with pytest.raises(IntegrityError), transaction.atomic():
        EvalSet.objects.filter(pk=s.pk).update(eval_only=False)
