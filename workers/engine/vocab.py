"""Teacher/student vocabulary check that must pass before logit distillation.

KD compares distributions id by id, so it is only meaningful when every id in the data names the
same token for both models and the special tokens agree. When they do not, response distillation
(``sft``) still works, because it re-tokenises the teacher's text with the student tokenizer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.engine.data import Record


class VocabMismatchError(ValueError):
    pass


_SFT_HINT = " Logit distillation needs a shared vocabulary; use method 'sft' instead, which works."


def used_ids(records: list[Record]) -> np.ndarray:
    parts = []
    for r in records:
        if r.token_ids is not None:
            parts.append(r.token_ids)
        if r.topk_ids is not None and r.topk_logprobs is not None:
            parts.append(r.topk_ids[np.isfinite(r.topk_logprobs)])
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def check_vocab(
    student: Any, teacher: Any | None, records: list[Record], student_vocab_size: int
) -> None:
    """Raise VocabMismatchError saying why when the teacher's ids do not mean the student's tokens."""
    ids = used_ids(records)
    too_big = ids[ids >= min(student_vocab_size, len(student))]
    if too_big.size:
        raise VocabMismatchError(
            f"the data uses token ids up to {int(too_big.max())} but the student's vocabulary has "
            f"{len(student)} tokens ({student_vocab_size} model rows)." + _SFT_HINT
        )
    if teacher is None:
        raise VocabMismatchError(
            "no teacher tokenizer was given, so the vocabularies cannot be compared; pass "
            "teacher_tokenizer (a folder holding the teacher's tokenizer)."
        )
    id_list = [int(i) for i in ids]
    if id_list and max(id_list) >= len(teacher):
        raise VocabMismatchError(
            f"the data uses id {max(id_list)} but the teacher tokenizer has {len(teacher)} tokens."
        )
    s_tokens = student.convert_ids_to_tokens(id_list)
    t_tokens = teacher.convert_ids_to_tokens(id_list)
    diff = [(i, t, s) for i, t, s in zip(id_list, t_tokens, s_tokens, strict=True) if t != s]
    if diff:
        shown = ", ".join(f"id {i}: teacher {t!r} vs student {s!r}" for i, t, s in diff[:5])
        raise VocabMismatchError(
            f"teacher and student map {len(diff)} of the {len(id_list)} token ids in the data to "
            f"different tokens ({shown})." + _SFT_HINT
        )
    for name in ("bos_token", "eos_token", "unk_token"):
        t_tok, s_tok = getattr(teacher, name, None), getattr(student, name, None)
        if t_tok is not None and t_tok != s_tok:
            raise VocabMismatchError(
                f"the special {name} differs: teacher {t_tok!r}, student {s_tok!r}." + _SFT_HINT
            )
    t_special = dict(zip(teacher.all_special_tokens, teacher.all_special_ids, strict=True))
    for tok, tid in t_special.items():
        sid = student.convert_tokens_to_ids(tok)
        if sid != tid:
            raise VocabMismatchError(
                f"special token {tok!r} is id {tid} for the teacher but {sid} for the student."
                + _SFT_HINT
            )
