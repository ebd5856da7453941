"""The duplicate store of a filter run: state in a scratch SQLite file, the same groups, first and
kept texts as the in-memory index it replaced (tests/filters/dedup_reference.py)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from distillapp.filters import dedup, dedup_store
from distillapp.filters.dedup_store import EXACT, NEAR, RANK_CLEAN, DedupStore, Found
from distillapp.filters.scratch import IdSpool, ScratchDB
from tests.filters import dedup_reference
from tests.filters.texts import BASE, CLOSE, CLOSER


@pytest.fixture
def scratch(tmp_path):
    with ScratchDB(tmp_path / "scratch" / "dedup.sqlite3") as db:
        yield db


def _fetch(texts_by_id):
    return lambda ids: {i: texts_by_id[i] for i in ids if i in texts_by_id}


def test_duplicates_are_found_across_batches_and_partitions(scratch, monkeypatch):
    monkeypatch.setattr(dedup_store, "PART_ENTRIES", 4)
    texts = {10: BASE, 11: CLOSE, 12: CLOSER, 13: BASE, 14: "", 15: "The sea and its tides."}
    store = DedupStore(scratch, exact=True, near=True, threshold=0.8, capacity=6)
    assert store.hashes.parts == 2 and store.bands.parts == 6 * 16 // 4
    ids = list(texts)
    prompts = [1, 1, 2, 3, 4, 5]
    for lo in range(0, 6, 2):  # three batches of two
        store.add(
            ids[lo : lo + 2],
            prompts[lo : lo + 2],
            [RANK_CLEAN] * 2,
            [texts[i] for i in ids[lo : lo + 2]],
            in_scope=True,
        )
    assert store.n == 5  # the empty text has no state
    assert store.resolve(_fetch(texts)) == 2
    found = store.lookup(ids)
    assert sorted(found) == [12, 13]
    assert found[12][:3] == (NEAR, 10, 10) and found[12].similarity >= 0.8
    assert found[13] == Found(EXACT, 10, 10, 1.0)  # 13 is in another batch than 10
    assert 11 not in found  # a sample of prompt 1, like the kept one
    assert [[cid for cid, _ in chunk] for chunk in store.duplicates(1, in_scope=True)] == [
        [12],
        [13],
    ]
    assert list(store.duplicates(5, in_scope=False)) == []


def test_the_kept_one_is_the_lowest_rank_then_the_lowest_id(scratch):
    store = DedupStore(scratch, exact=True, near=False, capacity=4)
    store.add([5, 7], [1, 2], [dedup_store.RANK_OTHER, RANK_CLEAN], ["x", "x"], in_scope=True)
    store.add(
        [3, 9], [3, 4], [dedup_store.RANK_OTHER, dedup_store.RANK_KEPT], ["x", "y"], in_scope=False
    )
    store.resolve(_fetch({}))
    assert store.lookup([3, 5, 7, 9]) == {3: (EXACT, 7, 7, 1.0), 5: (EXACT, 7, 7, 1.0)}
    assert [
        cid for chunk in store.duplicates(9, rank=dedup_store.RANK_OTHER) for cid, _ in chunk
    ] == [3, 5]


def test_lookup_answers_for_more_ids_than_one_query_takes(scratch, monkeypatch):
    monkeypatch.setattr(dedup_store, "_CHUNK", 3)
    store = DedupStore(scratch, exact=True, near=False, capacity=10)
    store.add(list(range(10)), list(range(10)), [RANK_CLEAN] * 10, ["a", "b"] * 5, in_scope=True)
    store.resolve(_fetch({}))
    assert sorted(store.lookup(list(range(-5, 20)))) == [2, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(RuntimeError):
        store.add([11], [1], [RANK_CLEAN], ["a"], in_scope=True)


def _corpus(rng: random.Random, n: int) -> list[str]:
    """Short texts from a small vocabulary: exact copies, edited copies (chains of them) and runs
    of near-identical texts large enough for the huge-bucket rule."""
    words = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "zeta", "river"]
    texts: list[str] = []
    for i in range(n):
        r = rng.random()
        if i and r < 0.15:
            texts.append(rng.choice(texts))  # exact copy
        elif i and r < 0.45:
            parts = rng.choice(texts).split() or ["x"]
            parts[rng.randrange(len(parts))] = rng.choice(words) + str(rng.randint(0, 9))
            texts.append(" ".join(parts))  # near copy, maybe of a near copy
        elif r < 0.5:
            texts.append(rng.choice(["", "   "]))
        elif r < 0.6:
            texts.append("the same long sentence about rivers and stones, copy " + str(i % 7))
        else:
            texts.append(" ".join(f"{rng.choice(words)}{rng.randint(0, 9)}" for _ in range(12)))
    return texts


@pytest.mark.parametrize(
    ("exact", "near", "within_group", "threshold"),
    [
        (True, True, False, 0.8),
        (True, True, True, 0.5),
        (True, False, False, 0.8),
        (False, True, False, 0.6),
        (False, True, True, 0.8),
    ],
)
@pytest.mark.parametrize(("seed", "coarse"), [(1, False), (2, False), (3, True)])
def test_the_store_agrees_with_the_in_memory_index(
    tmp_path, monkeypatch, exact, near, within_group, threshold, seed, coarse
):
    """Random corpora, scope and outside, every rank class, few prompts (so `within_group`
    matters), small batches, many partitions, small pages, and a small huge-bucket limit: the
    same duplicates, kinds, first, kept texts and similarities as the in-memory index. With
    `coarse`, band keys take 5 values, so most buckets are huge and linked as chains, whose
    neighbours are often not similar: which pairs are checked decides the groups."""
    if coarse:
        real = dedup.band_keys

        def five_keys(sigs, threshold, num_perm):
            return real(sigs, threshold, num_perm) % np.uint64(5)

        monkeypatch.setattr(dedup, "band_keys", five_keys)
        monkeypatch.setattr(dedup_reference, "band_keys", five_keys)
    monkeypatch.setattr(dedup_store, "PART_ENTRIES", 50)
    monkeypatch.setattr(dedup_store, "_CHUNK", 7)
    monkeypatch.setattr(dedup_store, "_VERIFY_TEXTS", 5)
    monkeypatch.setattr(dedup, "MAX_BUCKET_PAIRS", 4)
    rng = random.Random(seed)
    n = 300
    texts = _corpus(rng, n)
    ids = rng.sample(range(1, 10 * n), n)
    scope_ids = sorted(ids[: n * 2 // 3])
    outside_ids = sorted(ids[n * 2 // 3 :])
    text_of = dict(zip(scope_ids + outside_ids, texts, strict=True))
    group_of = {i: rng.randint(1, 25) for i in text_of}
    rank_of = {i: rng.choice([RANK_CLEAN, dedup_store.RANK_OTHER]) for i in scope_ids}
    rank_of |= {i: rng.choice([0, 1, 2]) for i in outside_ids}
    options = {"exact": exact, "near": near, "threshold": threshold, "within_group": within_group}
    reference = dedup_reference.DedupIndex(**options, capacity=4)
    with ScratchDB(tmp_path / "store.sqlite3") as db:
        store = DedupStore(db, **options, capacity=n)
        for part, in_scope in ((scope_ids, True), (outside_ids, False)):
            for lo in range(0, len(part), 37):
                batch = part[lo : lo + 37]
                args = (
                    batch,
                    [group_of[i] for i in batch],
                    [rank_of[i] for i in batch],
                    [text_of[i] for i in batch],
                )
                reference.add(*args, in_scope=in_scope)
                store.add(*args, in_scope=in_scope)
        expected = reference.resolve(_fetch(text_of))
        store.resolve(_fetch(text_of))
        got = store.lookup(list(text_of))
        assert len(expected) > 10 and len(got) == len(expected)
        for cid in expected.ids.tolist():
            kind, first, keeper, similarity = expected.get(cid)
            assert got[cid] == (kind, first, keeper, similarity), cid
        in_scope = expected.ids[expected.in_scope].tolist()
        assert [
            cid for chunk in store.duplicates(11, in_scope=True) for cid, _ in chunk
        ] == in_scope
        if near:
            assert any(f.kind == NEAR for f in got.values())
        if exact:
            assert any(f.kind == EXACT for f in got.values())


def test_the_scratch_file_is_deleted_when_closed_even_after_an_error(tmp_path):
    path = tmp_path / "deep" / "er" / "run.sqlite3"
    with pytest.raises(LookupError), ScratchDB(path) as db:
        spool = IdSpool(db, "ids")
        spool.extend(range(0, 10, 2))
        assert path.exists() and len(spool) == 5
        assert list(spool.chunks(2)) == [[0, 2], [4, 6], [8]]
        raise LookupError("something went wrong")
    assert not path.exists()
    db.close()  # twice is harmless


def test_a_new_scratch_database_starts_empty_over_a_leftover_file(tmp_path):
    path = tmp_path / "run.sqlite3"
    old = ScratchDB(path)
    IdSpool(old, "clean").extend([1, 2, 3])
    old.conn.close()  # a killed process: the file stays
    assert path.exists()
    with ScratchDB(path) as db:
        spool = IdSpool(db, "clean")  # the old table is gone
        assert list(spool.chunks(10)) == []


def test_band_partitions_spread_evenly(scratch):
    """The partition of a band key comes from its low 32 bits, which fmix64 makes uniform."""
    store = DedupStore(scratch, exact=False, near=True, capacity=20_000)
    rng = random.Random(5)
    texts = [" ".join(str(rng.random()) for _ in range(6)) for _ in range(2000)]
    store.add(list(range(2000)), list(range(2000)), [RANK_CLEAN] * 2000, texts, in_scope=True)
    counts = np.zeros(store.bands.parts, dtype=np.int64)
    for part, size in scratch.execute(
        "SELECT part, sum(length(seqs)) / 4 FROM band_log GROUP BY part"
    ):
        counts[part] = size
    assert counts.sum() == 2000 * store.n_bands
    assert counts.max() < 2 * counts.mean()
