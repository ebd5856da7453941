"""The demo's models, built once per test session (about half a minute on a CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict:
    pytest.importorskip("transformers")
    import torch

    from workers.engine.demo_models import build_demo_models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_demo_models(Path(tmp_path_factory.mktemp("models")))
    finally:
        torch.set_num_threads(threads)
