"""The demo task's tiny teacher is good at it, its tokenizer writes BOS, the student shares its
vocabulary (so kd is possible), a second build is a no-op, and the prompt file matches the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.engine import demo_models as dm

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples" / "demo_reverse_prompts.jsonl"


def test_the_teacher_reverses_strings_it_never_saw(demo_models):
    meta = json.loads((Path(demo_models["teacher"]) / dm.MARKER).read_text())
    seen = set(dm.words(dm.TEACHER_CHECK_SIZE, 2)) | set(dm.words(dm.DEMO_PROMPTS, dm.DEMO_SEED))
    held_out = dm.words(300, 12345, exclude=seen)
    acc = dm.accuracy(demo_models["teacher"], held_out)
    assert acc >= 0.9, (acc, meta)
    # and on the demo's own prompts, which the teacher never trained on either
    demo_words = [row["prompt"].removeprefix(dm.PREFIX) for row in dm.prompt_rows()]
    assert dm.accuracy(demo_models["teacher"], demo_words) >= 0.9


def test_the_chat_template_writes_bos_and_ends_where_the_answer_starts(demo_models):
    from transformers import AutoTokenizer

    for folder in (demo_models["teacher"], demo_models["student"]):
        tok = AutoTokenizer.from_pretrained(folder)
        text = tok.apply_chat_template(
            [{"role": "user", "content": "Reverse: abc"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert tok.decode(ids[1:]) == "Reverse: abc\n"


def test_the_student_shares_the_teachers_vocabulary_and_is_smaller(demo_models):
    from transformers import AutoConfig, AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(demo_models["teacher"])
    student = AutoTokenizer.from_pretrained(demo_models["student"])
    assert teacher.get_vocab() == student.get_vocab()
    t_cfg = AutoConfig.from_pretrained(demo_models["teacher"])
    s_cfg = AutoConfig.from_pretrained(demo_models["student"])
    assert s_cfg.vocab_size == t_cfg.vocab_size and s_cfg.hidden_size < t_cfg.hidden_size


def test_building_again_keeps_the_models(demo_models):
    teacher = Path(demo_models["teacher"])
    before = (teacher / "model.safetensors").stat().st_mtime_ns
    again = dm.build_demo_models(teacher.parent)
    assert again["built"] == {}
    assert (teacher / "model.safetensors").stat().st_mtime_ns == before


def test_a_half_built_folder_is_rebuilt(tmp_path):
    (tmp_path / dm.STUDENT_DIR).mkdir()
    (tmp_path / dm.STUDENT_DIR / "config.json").write_text("{}")  # no marker: an interrupted build
    assert not dm._is_built(tmp_path / dm.STUDENT_DIR)
    dm.build_student(tmp_path / dm.STUDENT_DIR)
    assert dm._is_built(tmp_path / dm.STUDENT_DIR)


def test_the_committed_prompt_file_is_the_generated_one_with_correct_references():
    rows = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    assert rows == dm.prompt_rows()
    for row in rows:
        word = row["prompt"].removeprefix(dm.PREFIX)
        assert row["reference"] == word[::-1] and len(set(word)) == len(word)
