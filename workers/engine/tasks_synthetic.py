"""Small verifiable tasks for benchmarks of distillation (bench/distill_quality.py).

Sorting letters: the prompt is a handful of distinct letters followed by ``>``, the answer the same
letters in alphabetical order ("kdbh>" -> "bdhk"). It is verifiable by exact match, and a teacher
trained on it with plain cross-entropy ranks the letters it has not written yet by their order, so
its per-token distribution carries information a one-hot target lacks: at each step the second
most likely letter is the next one after the correct one, the third the one after that, and so on.
Needs only the standard library.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SORT_LETTERS = "abcdefghijklmno"
SORT_SEPARATOR = ">"
SORT_CHARS = SORT_LETTERS + SORT_SEPARATOR  # with toy.SPECIALS: a vocabulary of 20 ids


@dataclass(frozen=True)
class SortTask:
    length: int = 6
    letters: str = SORT_LETTERS
    repeats: bool = False  # letters may repeat (sorting a multiset: the model must also count)

    def prompt(self, items: str) -> str:
        return items + SORT_SEPARATOR

    def answer(self, items: str) -> str:
        return "".join(sorted(items))

    def messages(self, items: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt(items)}]

    def split(self, train: int, held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
        """Distinct random problems: ``train`` for training, ``held_out`` never trained on."""
        if not self.repeats and train + held_out > math.comb(len(self.letters), self.length):
            raise ValueError(
                f"only {math.comb(len(self.letters), self.length)} distinct sets of "
                f"{self.length} letters exist"
            )
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[str] = []
        while len(out) < train + held_out:
            if self.repeats:
                items = "".join(rng.choices(self.letters, k=self.length))
            else:
                items = "".join(rng.sample(self.letters, self.length))
            key = "".join(sorted(items))
            if key in seen:  # the same set in another order has the same answer: keep sets apart
                continue
            seen.add(key)
            out.append(items)
        return out[held_out:], out[:held_out]
