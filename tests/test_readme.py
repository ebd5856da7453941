"""The README's configuration table must list every environment variable the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READS = re.compile(
    r"""(?:env_str|env_bool|env_int|env_list|os\.environ\.get|os\.getenv|os\.environ\.setdefault)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
)
# Set by tooling rather than by users.
NOT_USER_SETTINGS = {"DJANGO_SETTINGS_MODULE", "RANK", "LOCAL_RANK", "WORLD_SIZE"}
# (RANK and friends are set by torchrun / accelerate launch for multi-GPU training.)


def test_every_environment_variable_is_documented():
    readme = (ROOT / "README.md").read_text()
    names = set()
    for folder in ("distillapp", "workers"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(READS.findall(path.read_text()))
    missing = sorted(n for n in names - NOT_USER_SETTINGS if f"`{n}`" not in readme)
    assert not missing, f"README configuration table lacks: {missing}"
