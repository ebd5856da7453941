from __future__ import annotations

import hashlib

import numpy as np
import pytest

from distillapp.prompts import fingerprints
from distillapp.prompts.fingerprints import SeenHashes


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_first_occurrence_wins_within_a_batch_and_across_batches():
    seen = SeenHashes()
    assert seen.first_seen([h("a"), h("b"), h("a"), h("c")]).tolist() == [True, True, False, True]
    assert seen.first_seen([h("c"), h("d"), h("d")]).tolist() == [False, True, False]
    assert seen.first_seen([]).tolist() == []


@pytest.mark.parametrize("max_run", [16, 1 << 17])
def test_many_batches_agree_with_a_plain_set(monkeypatch, max_run):
    monkeypatch.setattr(fingerprints, "MAX_RUN", max_run)  # 16: runs stop merging early
    rng = np.random.default_rng(0)
    seen, reference = SeenHashes(), set()
    for _ in range(300):  # enough batches for several merges of the sorted runs
        batch = [h(str(n)) for n in rng.integers(0, 5_000, size=rng.integers(1, 60))]
        expected = []
        for value in batch:
            expected.append(value not in reference)
            reference.add(value)
        assert seen.first_seen(batch).tolist() == expected


def test_remembered_hashes_in_uuid_form_count_as_seen():
    seen = SeenHashes()
    stored = [h("old 1"), h("old 2")]
    as_copy_writes = "".join(
        f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:]}\n" for v in stored
    ).encode()
    seen.remember(as_copy_writes)
    assert seen.first_seen([h("old 2"), h("new"), h("old 1")]).tolist() == [False, True, False]
