"""Texts for the duplicate tests: a paragraph and two one-word variants of it (Jaccard well above
0.8 with BASE, not identical)."""

from __future__ import annotations

BASE = (
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the "
    "chloroplasts of plant cells. It happens mostly in leaves, where chlorophyll absorbs light."
)
CLOSE = BASE.replace("mostly", "largely")
CLOSER = BASE.replace("leaves", "leafs")
