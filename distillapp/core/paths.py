"""Where local models may be loaded from: the configured roots and the organisation's artefacts.

A model path is a string a user types, and the web host and the workers then open it. Without a
check it reads any folder on the host, including another organisation's artefacts, and "Test
teacher" says which paths exist. So a path must resolve (symlinks and `..` followed) inside one of
settings.MODEL_ROOTS (DISTILLERY_MODEL_ROOTS) or inside MEDIA_ROOT/orgs/<own org id>/, never inside
another organisation's folder, and the refusal reads the same whether the path exists or not.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

REFUSED = (
    "Models load only from the model folders an operator configured (DISTILLERY_MODEL_ROOTS) "
    "and from your organisation's artefacts."
)


class ModelPathRefused(ValueError):
    def __init__(self) -> None:
        super().__init__(REFUSED)


def artifacts_root() -> Path:
    return Path(settings.MEDIA_ROOT) / "orgs"


def org_artifacts_dir(org_id: int) -> Path:
    """The folder that holds one organisation's artefacts (checkpoints, exports, merged models)."""
    return artifacts_root() / str(int(org_id))


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_model_path(raw: str, *, org_id: int) -> Path:
    """The resolved path if the organisation may load a model from it; ModelPathRefused if not."""
    text = (raw or "").strip()
    if not text or "\x00" in text:
        raise ModelPathRefused()
    try:
        path = Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an unreadable parent
        raise ModelPathRefused() from exc
    own = org_artifacts_dir(org_id).resolve()
    if _inside(path, own):
        return path
    if _inside(path, artifacts_root().resolve()):
        raise ModelPathRefused()  # another organisation's artefacts, even under a model root
    for root in settings.MODEL_ROOTS:
        if _inside(path, Path(root).expanduser().resolve()):
            return path
    raise ModelPathRefused()
