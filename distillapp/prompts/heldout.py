"""The held-out split: which prompts never go to training, decided by (seed, text) alone.

Domain policy, not parsing: imports assign it, and evaluation relies on it staying put (the same
text with the same seed is held out in every import, whatever the row order), so it lives here
and the readers in parsing.py only call it.
"""

from __future__ import annotations


def heldout_threshold(fraction: float) -> int:
    return int(fraction * 2**64)


def seed_mask(seed: int) -> int:
    """64 bits spread from the seed (splitmix64), mixed into each prompt's held-out draw."""
    z = (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def is_heldout(mask: int, hash_hex: str, threshold: int) -> bool:
    """Decided by (seed, text) only, so the split does not depend on row order.

    The text hash's last 64 bits are uniform, and so is their XOR with the seed's mask: the share
    under `threshold` is the held-out fraction. (The first 64 bits are the import's duplicate
    fingerprint.) `mask` is seed_mask(seed).
    """
    return int(hash_hex[16:32], 16) ^ mask < threshold
