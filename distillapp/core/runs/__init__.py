"""One lifecycle for every background run: the abstract model (`models`), the writes that claim,
heart-beat, end, cancel, resume and sweep (`services`), and the kinds of run (`registry`)."""

from __future__ import annotations
