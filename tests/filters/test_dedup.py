from __future__ import annotations

import random

import numpy as np
from datasketch import MinHash

from distillapp.filters import dedup


def _text(rng: random.Random, words: int = 40) -> str:
    vocab = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "kappa",
        "sigma",
        "omega",
        "zeta",
        "theta",
        "lambda",
        "river",
        "stone",
        "cloud",
        "light",
        "paper",
        "glass",
        "north",
        "south",
        "quiet",
        "swift",
    ]
    return " ".join(rng.choice(vocab) + str(rng.randint(0, 99)) for _ in range(words))


def test_signatures_equal_datasketch_minhash_updated_one_shingle_at_a_time():
    texts = [
        "Hello world, this is a test",
        "hello   WORLD, this is a test!",
        "abc",
        "",
        "éàü 漢字 emoji 🙂 mixed",
    ]
    hashes, first, kept = dedup.shingle_hashes(texts)
    sigs = dedup.minhash_signatures(hashes, first, 128)
    assert list(kept) == [0, 1, 2, 4]  # the empty text has no shingles
    for row, i in enumerate(kept):
        m = MinHash(
            num_perm=128, scheme=dedup.SCHEME, seed=dedup.SEED, hashfunc=dedup.shingle_hash32
        )
        for s in dedup.shingles(texts[i]):
            m.update(s)
        assert np.array_equal(m.hashvalues, sigs[row])


def test_numpy_banding_gives_the_same_candidates_as_datasketch_minhashlsh():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(400, 128), dtype=np.uint64).astype(np.uint32)
    sigs[200:300] = sigs[:100]
    sigs[300:340, :70] = sigs[0, :70]  # a bucket of 41 in several bands
    assert dedup.lsh_candidate_pairs(sigs, 0.65, 128) == dedup.lsh_candidate_pairs_datasketch(
        sigs, 0.65, 128
    )


def test_exact_groups_collect_identical_texts_only():
    groups = dedup.exact_duplicate_groups(["a", "b", "a", "a ", "b", "c"])
    assert groups == [[0, 2], [1, 4]]


def test_near_duplicates_group_close_texts_and_leave_distinct_ones_alone():
    rng = random.Random(1)
    base = [_text(rng) for _ in range(50)]
    texts = list(base)
    # one-word edits of texts 0..9 (Jaccard well above 0.8), a three-way group around 10
    for i in range(10):
        words = base[i].split()
        words[5] = "CHANGED"
        texts.append(" ".join(words))
    texts.append(base[10] + " extra")
    texts.append(base[10].upper())  # normalisation: case does not matter
    groups = dedup.near_duplicate_groups(texts, threshold=0.8)
    as_sets = [set(g) for g in groups]
    for i in range(10):
        assert {i, 50 + i} in as_sets
    assert {10, 60, 61} in as_sets
    assert len(groups) == 11
    for g in groups:
        for a in g[1:]:
            assert dedup.jaccard(texts[g[0]], texts[a]) >= 0.8 or len(g) > 2


def test_near_duplicate_threshold_is_respected():
    a = _text(random.Random(7), 60)
    b = a.replace(a.split()[20], "different")
    j = dedup.jaccard(a, b)
    assert 0.8 < j < 0.98
    assert dedup.near_duplicate_groups([a, b], threshold=j - 0.05) == [[0, 1]]
    assert dedup.near_duplicate_groups([a, b], threshold=min(1.0, j + 0.05)) == []


def test_short_and_empty_texts_do_not_break_grouping():
    assert dedup.near_duplicate_groups(["", "  ", "ab", "AB", "xyz"], threshold=0.8) == [[2, 3]]
    assert dedup.near_duplicate_groups([], threshold=0.8) == []
    assert dedup.near_duplicate_groups(["only one"], threshold=0.8) == []
