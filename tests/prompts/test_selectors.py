"""Browsing (keyset pages, search, filters) and the held-out guard of the generation selectors."""

from __future__ import annotations

import pytest

from distillapp.core.cursor import InvalidCursor, encode_cursor
from distillapp.prompts.models import Split
from distillapp.prompts.selectors import (
    HeldOutPromptError,
    ensure_trainable,
    prompt_set_prompts,
    prompts_for_generation,
)
from distillapp.prompts.services import prompt_set_import
from tests.prompts.conftest import jsonl, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def imported(project):
    records = [
        {"prompt": "How do I bake sourdough bread?", "topic": "cooking", "level": 2},
        {"prompt": "Explain Python decorators", "topic": "code", "level": 3},
        {
            "prompt": "Baking cookies without an oven",
            "topic": "cooking",
            "split": "heldout",
            "level": 1,
        },
        {"prompt": "Write a poem about the sea", "topic": "poetry"},
        {"prompt": "Held-out question about bread", "topic": "cooking", "split": "heldout"},
    ] + [{"prompt": f"filler prompt {i}", "topic": "filler"} for i in range(120)]
    return prompt_set_import(
        project=project,
        file=upload("p.jsonl", jsonl(*records)),
        name="s",
        heldout_fraction=0,
        seed=1,
    ).prompt_set


def test_keyset_pages_cover_every_prompt_once_in_order(imported):
    seen, cursor, pages = [], None, 0
    while True:
        page = prompt_set_prompts(prompt_set=imported, cursor=cursor, limit=17)
        seen += [p.pk for p in page.items]
        pages += 1
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert pages == 8 and len(seen) == 125 and seen == sorted(set(seen))


def test_a_forged_cursor_is_refused(imported):
    with pytest.raises(InvalidCursor):
        prompt_set_prompts(prompt_set=imported, cursor="garbage")
    assert prompt_set_prompts(prompt_set=imported, cursor=encode_cursor(10**12)).items == []


def test_search_finds_words_on_either_backend(imported):
    texts = [p.text for p in prompt_set_prompts(prompt_set=imported, q="bread").items]
    assert set(texts) == {"How do I bake sourdough bread?", "Held-out question about bread"}
    assert [p.text for p in prompt_set_prompts(prompt_set=imported, q="decorators").items] == [
        "Explain Python decorators"
    ]
    assert (
        prompt_set_prompts(prompt_set=imported, q="'); DROP TABLE prompts_prompt; --").items == []
    )


def test_filters_by_split_and_metadata(imported):
    held = prompt_set_prompts(prompt_set=imported, split=Split.HELDOUT).items
    assert {p.text for p in held} == {
        "Baking cookies without an oven",
        "Held-out question about bread",
    }
    cooking = prompt_set_prompts(prompt_set=imported, meta_key="topic", meta_value="cooking").items
    assert len(cooking) == 3
    assert [
        p.text
        for p in prompt_set_prompts(prompt_set=imported, meta_key="level", meta_value="3").items
    ] == ["Explain Python decorators"]
    assert len(prompt_set_prompts(prompt_set=imported, meta_key="level").items) == 3
    assert (
        prompt_set_prompts(prompt_set=imported, meta_key="topic__contains", meta_value="x").items
        == []
    )


def test_generation_never_gets_held_out_prompts_whatever_the_filters(imported):
    assert prompts_for_generation(prompt_set=imported).filter(split=Split.HELDOUT).count() == 0
    assert prompts_for_generation(prompt_set=imported).count() == 123
    breads = prompts_for_generation(prompt_set=imported, q="bread")
    assert [p.text for p in breads] == ["How do I bake sourdough bread?"]
    cooking = prompts_for_generation(prompt_set=imported, metadata={"topic": "cooking"})
    assert [p.text for p in cooking] == ["How do I bake sourdough bread?"]
    assert not prompts_for_generation(
        prompt_set=imported, q="cookies", metadata={"level": "1"}
    ).exists()


def test_ensure_trainable_refuses_held_out_ids(imported):
    train_ids = list(imported.prompts.filter(split=Split.TRAIN).values_list("pk", flat=True))
    ensure_trainable(train_ids)
    held_id = imported.prompts.filter(split=Split.HELDOUT).values_list("pk", flat=True)[0]
    with pytest.raises(HeldOutPromptError):
        ensure_trainable([*train_ids, held_id])
