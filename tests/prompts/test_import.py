"""prompt_set_import: formats, all-or-nothing errors, dedup and the held-out split."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from distillapp.prompts import services
from distillapp.prompts.models import Prompt, PromptSet, Split
from distillapp.prompts.parsing import MAX_ERRORS
from distillapp.prompts.services import PromptImportError, prompt_set_import
from tests.conftest import USING_POSTGRES
from tests.factories import ProjectFactory
from tests.prompts.conftest import jsonl, parquet_bytes, upload

pytestmark = pytest.mark.django_db


def do_import(project, name, content, **kwargs):
    return prompt_set_import(project=project, file=upload(name, content), name="set", **kwargs)


def refused(project, name, content, **kwargs) -> PromptImportError:
    with pytest.raises(PromptImportError) as info:
        do_import(project, name, content, **kwargs)
    assert Prompt.objects.count() == 0 and PromptSet.objects.count() == 0
    return info.value


def test_jsonl_with_prompts_chats_references_and_metadata_is_imported(project, alice):
    content = jsonl(
        {"prompt": "What is 2 + 2?", "id": 7, "reference": "4", "topic": "math", "level": 1},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a colour."},
            ]
        },
        {"prompt": "Say hi", "split": "heldout", "tags": ["a", "b"]},
    )
    result = do_import(project, "p.jsonl", content, seed=1, created_by=alice)
    assert (result.imported, result.duplicates_dropped) == (3, 0)
    ps = result.prompt_set
    assert (ps.total_count, ps.source_format, ps.created_by, ps.seed) == (3, "jsonl", alice, 1)
    first, chat, third = Prompt.objects.order_by("position")
    assert first.external_id == "7" and first.reference == "4"
    assert first.metadata == {"topic": "math", "level": 1}
    # A plain prompt is stored as its text only; `chat` reads both forms as messages.
    assert first.messages is None
    assert first.chat == [{"role": "user", "content": "What is 2 + 2?"}]
    assert (
        chat.messages[0] == {"role": "system", "content": "Be brief."}
        and "system: Be brief." in chat.text
    )
    assert third.split == Split.HELDOUT and third.metadata == {"tags": ["a", "b"]}


def test_utf8_bom_is_accepted_in_jsonl_and_csv(project):
    assert (
        do_import(project, "a.jsonl", b"\xef\xbb\xbf" + jsonl({"prompt": "caf\u00e9 one"})).imported
        == 1
    )
    assert (
        do_import(project, "b.csv", "\ufeffprompt,source\ncaf\u00e9 two,x\n".encode()).imported == 1
    )
    assert Prompt.objects.get(text="café two").metadata == {"source": "x"}


def test_csv_with_quoted_newlines_reference_and_metadata(project):
    content = b'id,prompt,reference,source,split\n1,"Line one\nline two, with comma",ref,web,\n2,"He said ""hi""",,forum,train\n'
    result = do_import(project, "c.csv", content)
    assert result.imported == 2
    first, second = Prompt.objects.order_by("position")
    assert (
        first.text == "Line one\nline two, with comma"
        and first.reference == "ref"
        and first.external_id == "1"
    )
    assert first.metadata == {"source": "web"}
    assert (
        second.text == 'He said "hi"' and second.reference is None and second.split == Split.TRAIN
    )


def test_parquet_is_read_with_metadata_and_chats(project):
    content = parquet_bytes(
        {
            "prompt": ["first", "second", None, "fourth"],
            "messages": [None, None, [{"role": "user", "content": "chat prompt"}], None],
            "score": [1.5, 2.0, 3.0, float("nan")],
            "split": [None, "heldout", None, None],
        }
    )
    result = do_import(project, "d.parquet", content)
    assert result.imported == 4 and result.prompt_set.source_format == "parquet"
    rows = list(Prompt.objects.order_by("position"))
    assert rows[0].metadata == {"score": 1.5} and rows[3].metadata == {"score": None}
    assert rows[1].split == Split.HELDOUT and rows[2].text == "chat prompt"


def test_a_path_can_be_imported(project, tmp_path: Path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(jsonl({"prompt": "from a path"}))
    result = prompt_set_import(project=project, file=path, name="")
    assert result.imported == 1 and result.prompt_set.name == "prompts"


def test_exact_duplicates_are_dropped_within_the_file_and_against_the_project(project):
    first = do_import(
        project,
        "a.jsonl",
        jsonl({"prompt": "Hello  world"}, {"prompt": "hello world"}, {"prompt": " Hello world "}),
    )
    assert (first.imported, first.duplicates_dropped) == (2, 1)  # case differs, whitespace does not
    chat_same = {"messages": [{"role": "user", "content": "Hello world"}]}
    second = do_import(
        project, "b.jsonl", jsonl(chat_same, {"prompt": "Ｈｅｌｌｏ world"}, {"prompt": "new one"})
    )
    assert (second.imported, second.duplicates_dropped) == (1, 2)  # NFKC folds full-width letters
    assert second.prompt_set.total_count == 1 and second.prompt_set.duplicates_dropped == 2


WRITERS = [False, pytest.param(True, marks=pytest.mark.skipif(not USING_POSTGRES, reason="COPY"))]


@pytest.mark.parametrize("use_copy", WRITERS, ids=["bulk_create", "copy"])
def test_every_earlier_set_of_the_project_and_only_of_the_project_is_checked(
    project, org, monkeypatch, use_copy
):
    """Duplicates are dropped against all the project's prompts (read in chunks on SQLite), by
    both writers; the same text in another project is not a duplicate."""
    monkeypatch.setattr(services.imports, "HASH_READ_CHUNK", 3)
    texts = [f"prompt {i}" for i in range(10)]
    for start in (0, 4, 8):  # three sets: 0-3, 4-7, 8-9
        chunk = [{"prompt": t} for t in texts[start : start + 4]]
        do_import(project, "part.jsonl", jsonl(*chunk), use_copy=use_copy)
    again = do_import(
        project, "all.jsonl", jsonl(*({"prompt": t} for t in [*texts, "new"])), use_copy=use_copy
    )
    assert (again.imported, again.duplicates_dropped) == (1, 10)
    elsewhere = do_import(
        ProjectFactory(org=org),
        "all.jsonl",
        jsonl(*({"prompt": t} for t in texts)),
        use_copy=use_copy,
    )
    assert (elsewhere.imported, elsewhere.duplicates_dropped) == (10, 0)
    assert Prompt.objects.filter(project=project).count() == 11


def test_chats_with_other_roles_are_not_duplicates_of_the_plain_prompt(project):
    result = do_import(
        project,
        "a.jsonl",
        jsonl(
            {"prompt": "Hi"},
            {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}]},
        ),
    )
    assert result.imported == 2


def test_seeded_split_is_reproducible_order_independent_and_near_the_fraction(project, org):
    from tests.factories import ProjectFactory

    records = [{"prompt": f"prompt number {i}"} for i in range(2000)]
    a = do_import(project, "a.jsonl", jsonl(*records), heldout_fraction=0.2, seed=123)
    other = ProjectFactory(org=org)
    b = prompt_set_import(
        project=other,
        file=upload("b.jsonl", jsonl(*reversed(records))),
        name="b",
        heldout_fraction=0.2,
        seed=123,
    )
    held_a = set(
        Prompt.objects.filter(prompt_set=a.prompt_set, split=Split.HELDOUT).values_list(
            "text", flat=True
        )
    )
    held_b = set(
        Prompt.objects.filter(prompt_set=b.prompt_set, split=Split.HELDOUT).values_list(
            "text", flat=True
        )
    )
    assert held_a == held_b and a.heldout == len(held_a)
    assert 300 <= a.heldout <= 500
    c_project = ProjectFactory(org=org)
    c = prompt_set_import(
        project=c_project,
        file=upload("c.jsonl", jsonl(*records)),
        name="c",
        heldout_fraction=0.2,
        seed=124,
    )
    held_c = set(
        Prompt.objects.filter(prompt_set=c.prompt_set, split=Split.HELDOUT).values_list(
            "text", flat=True
        )
    )
    assert held_c != held_a


def test_split_field_overrides_the_fraction(project):
    result = do_import(
        project,
        "a.jsonl",
        jsonl({"prompt": "a", "split": "heldout"}, {"prompt": "b", "split": "TRAIN"}),
        heldout_fraction=1.0,
    )
    assert dict(Prompt.objects.values_list("text", "split")) == {"a": "heldout", "b": "train"}
    assert result.heldout == 1 and result.prompt_set.train_count == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"prompt": "unterminated\n', "invalid JSON"),
        (b'["a list"]\n', "expected a JSON object"),
        (b'"just a string"\n', "expected a JSON object"),
        (b'{"id": 1}\n', "missing prompt"),
        (b'{"prompt": "   "}\n', "prompt is empty"),
        (b'{"prompt": 42}\n', "prompt must be a string"),
        (b'{"messages": "hi"}\n', "messages"),
        (b'{"messages": []}\n', "messages"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}\n', "role must be one of"),
        (b'{"messages": [{"role": "user", "content": 3}]}\n', "content must be a string"),
        (b'{"messages": [{"role": "system", "content": "x"}]}\n', "at least one user message"),
        (b'{"messages": ["hi"]}\n', "must be an object"),
        (b'{"prompt": "x", "split": "test"}\n', "split must be"),
        (b'{"prompt": "x", "reference": 5}\n', "reference must be a string"),
        (b'{"prompt": "x", "score": NaN}\n', "invalid JSON"),
        (b'{"prompt": "nul \\u0000 inside"}\n', "NUL"),
        (b'{"prompt": "lone \\ud800 surrogate"}\n', "surrogate"),
        (b'{"prompt": "caf\xe9"}\n', "invalid UTF-8"),
    ],
)
def test_bad_jsonl_line_is_reported_with_its_number_and_nothing_is_stored(project, line, message):
    content = (
        jsonl({"prompt": "a good one"}, {"prompt": "another good one"})
        + line
        + jsonl({"prompt": "later"})
    )
    error = refused(project, "bad.jsonl", content)
    assert error.status == 400
    assert error.errors[0]["line"] == 3 and message in error.errors[0]["message"], error.errors


def test_only_the_first_20_errors_are_listed(project):
    content = b"".join(b'{"nope": %d}\n' % i for i in range(50))
    error = refused(project, "bad.jsonl", content)
    assert len(error.errors) == MAX_ERRORS and [e["line"] for e in error.errors] == list(
        range(1, 21)
    )
    assert "more" in error.detail


def test_empty_and_blank_files_are_refused(project):
    assert refused(project, "empty.jsonl", b"").status == 400
    assert "no prompts" in refused(project, "blank.jsonl", b"\n  \n").detail
    assert refused(project, "header-only.csv", b"prompt,source\n").status == 400


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("prompts.txt", b"hello\nworld\n"),
        ("prompts.exe", b"MZ\x90\x00"),
        ("noext", b"\x00\x01binary"),
        ("fake.parquet", b"not parquet"),
    ],
)
def test_unknown_extension_or_content_is_415(project, name, content):
    assert refused(project, name, content).status == 415


def test_jsonl_content_without_a_known_extension_is_sniffed(project):
    assert do_import(project, "prompts.txt", jsonl({"prompt": "sniffed"})).imported == 1


def test_file_over_the_size_limit_is_413_before_parsing(project, settings):
    settings.PROMPT_UPLOAD_MAX_BYTES = 10
    error = refused(project, "big.jsonl", jsonl({"prompt": "this line is longer than ten bytes"}))
    assert error.status == 413 and "limit" in error.detail


def test_missing_prompt_column_is_422_for_parquet_and_csv(project):
    assert refused(project, "x.parquet", parquet_bytes({"question": ["a", "b"]})).status == 422
    error = refused(project, "x.csv", b"question,answer\na,b\n")
    assert error.status == 422 and "prompt" in error.detail


def test_csv_row_problems_carry_line_numbers(project):
    content = b'prompt,source\nok,a\n"two\nlines",b\n,c\nextra,d,e\n'
    error = refused(project, "x.csv", content)
    assert [(e["line"], e["message"][:20]) for e in error.errors] == [
        (5, "prompt is empty"),
        (6, "expected 2 fields as"),
    ]


def test_invalid_utf8_in_csv_is_400(project):
    assert refused(project, "x.csv", b"prompt\nok\ncaf\xe9\n").errors[0]["line"] == 3


def test_fraction_and_seed_are_validated(project):
    for fraction in (-0.1, 1.5, "abc", float("nan")):
        assert (
            refused(project, "a.jsonl", jsonl({"prompt": "x"}), heldout_fraction=fraction).status
            == 422
        )
    assert refused(project, "a.jsonl", jsonl({"prompt": "x"}), seed=-1).status == 422
    assert refused(project, "a.jsonl", jsonl({"prompt": "x"}), seed="seven").status == 422


def test_a_file_object_without_size_is_measured(project):
    stream = io.BytesIO(jsonl({"prompt": "from a stream"}))
    stream.name = "stream.jsonl"
    assert prompt_set_import(project=project, file=stream, name="s").imported == 1


def test_reimporting_the_same_file_drops_everything_as_duplicates(project):
    content = jsonl({"prompt": "one"}, {"prompt": "two"})
    do_import(project, "a.jsonl", content)
    again = do_import(project, "a.jsonl", content)
    assert (again.imported, again.duplicates_dropped) == (0, 2)
    assert json.loads(json.dumps(again.prompt_set.total_count)) == 0


def test_an_overlong_line_is_refused_without_reading_it_whole(project, monkeypatch):
    from distillapp.prompts import parsing

    monkeypatch.setattr(parsing, "MAX_LINE_BYTES", 64)
    content = jsonl({"prompt": "short"}, {"prompt": "x" * 500}, {"prompt": "after"})
    error = refused(project, "long.jsonl", content)
    assert [e["line"] for e in error.errors] == [2] and "longer than" in error.errors[0]["message"]
    csv_error = refused(project, "long.csv", b"prompt\nshort\n" + b"y" * 500 + b"\n")
    assert csv_error.status == 400 and csv_error.errors[0]["line"] == 3


def test_jsonl_lines_are_read_across_block_boundaries(project, monkeypatch):
    """The JSONL reader splits lines a block at a time: lines cut by a block boundary are joined,
    and a line that outgrows the limit across blocks is refused without being held."""
    from distillapp.prompts import parsing

    monkeypatch.setattr(parsing, "READ_BLOCK", 7)
    records = [{"prompt": f"question number {i}", "n": i} for i in range(40)]
    result = do_import(project, "small-blocks.jsonl", jsonl(*records), heldout_fraction=0)
    assert result.imported == 40
    texts = list(Prompt.objects.order_by("position").values_list("text", flat=True))
    assert texts == [r["prompt"] for r in records]

    monkeypatch.setattr(parsing, "MAX_LINE_BYTES", 64)
    content = jsonl({"prompt": "short"}, {"prompt": "x" * 500}, {"prompt": "after"}, "oops")
    with pytest.raises(PromptImportError) as info:
        do_import(project, "long.jsonl", content)
    error = info.value
    assert Prompt.objects.count() == 40 and PromptSet.objects.count() == 1
    assert [e["line"] for e in error.errors] == [2, 4]
    assert "longer than" in error.errors[0]["message"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_the_set_records_the_files_sha256(project, fmt):
    import hashlib

    content = {
        "jsonl": jsonl({"prompt": "one"}, {"prompt": "two"}),
        "csv": b"prompt,topic\none,a\ntwo,b\n",
        "parquet": parquet_bytes({"prompt": ["one", "two"]}),
    }[fmt]
    result = do_import(project, f"p.{fmt}", content)
    assert result.prompt_set.sha256 == hashlib.sha256(content).hexdigest()
    assert PromptSet.objects.get().sha256 == hashlib.sha256(content).hexdigest()
