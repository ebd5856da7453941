"""Artefacts of a finished run: which files each holds, the model card, and a zip streamed from a
generator (a file at a time, 1 MiB at a time: never whole in memory)."""

from __future__ import annotations

import functools
import subprocess
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import StreamingHttpResponse

from distillapp.core.runs.models import RunStatus
from distillapp.training.models import TrainingArtifact, TrainingRun

# The adapter (or full model) lives in the run folder itself beside its checkpoints and the
# other artefacts' folders: only its top-level files belong to it.
_TOP_LEVEL_ONLY = {"adapter", "model"}
_NEVER = {".lock", "STOP"}
CHUNK = 1024 * 1024


class NotDownloadable(Exception):
    pass


def artifact_files(*, name: str, folder: Path) -> list[tuple[str, Path]]:
    """(name in the archive, file) pairs of an artefact, sorted."""
    if not folder.is_dir():
        return []
    if name in _TOP_LEVEL_ONLY:
        found = [p for p in folder.iterdir() if p.is_file()]
    else:
        found = [p for p in folder.rglob("*") if p.is_file()]
    return sorted(
        (str(p.relative_to(folder)), p)
        for p in found
        if p.name not in _NEVER and not p.name.endswith(".tmp")
    )


def artifact_size(*, name: str, folder: Path) -> int:
    return sum(p.stat().st_size for _n, p in artifact_files(name=name, folder=folder))


class _Pipe:
    """A write-only file whose bytes the generator takes out after each write."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        if data:
            self.chunks.append(bytes(data))
            self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def zip_stream(files: list[tuple[str, Path]], *, root: str) -> Iterator[bytes]:
    """Yield a zip of `files` (stored, zip64) a chunk at a time."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[call-overload]
        for arcname, path in files:
            info = zipfile.ZipInfo.from_file(path, f"{root}/{arcname}")
            with path.open("rb") as src, archive.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()


def artifact_download(*, artifact: TrainingArtifact) -> StreamingHttpResponse:
    run = artifact.run
    if run.status != RunStatus.SUCCEEDED:
        raise NotDownloadable("The run has not finished successfully; nothing to download yet.")
    folder = Path(settings.MEDIA_ROOT) / artifact.path
    files = artifact_files(name=artifact.name, folder=folder)
    if not files:
        raise NotDownloadable("The artefact's files are missing from the artefact store.")
    root = f"run-{run.pk}-{artifact.name}"
    response = StreamingHttpResponse(zip_stream(files, root=root), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{root}.zip"'
    return response


@functools.cache
def code_version() -> str:
    """`git describe` of the checkout when there is one, else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=str(settings.BASE_DIR),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"git {out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"distillery {metadata.version('distillery')}"
    except metadata.PackageNotFoundError:
        return "unknown"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "–" if value is None else str(value)


def model_card(*, run: TrainingRun, result: dict[str, Any]) -> str:
    """README.md of the student: base model, data (hash and lineage), method, settings, losses."""
    version = run.dataset_version
    base = run.base_model
    lineage = version.lineage or {}
    inspection = base.inspection or {}
    lines = [
        f"# Student of training run {run.pk} ({run.project.name})",
        "",
        "Trained with Distillery.",
        "",
        "## Base model",
        "",
        f"- Name: {base.name}",
        f"- Source: {base.location}",
        f"- Architecture: {inspection.get('architecture', '–')}, "
        f"{_fmt(inspection.get('parameters'))} parameters, vocabulary {_fmt(inspection.get('vocab_size'))}",
        "",
        "## Data",
        "",
        f"- Dataset: {version.dataset.name} v{version.number}",
        f"- SHA-256 of the rows: `{version.sha256}`",
        f"- Rows: {(version.counts or {}).get('train', 0)} train, "
        f"{(version.counts or {}).get('validation', 0)} validation",
    ]
    if version.parent_id:
        lines.append(f"- Parent version: v{version.parent.number if version.parent else '?'}")
    for ps in lineage.get("prompt_sets", []):
        lines.append(f"- Prompt set: {ps.get('name')} (upload sha256 `{ps.get('sha256')}`)")
    for job in lineage.get("jobs", []):
        snap = job.get("teacher_snapshot") or {}
        lines.append(
            f"- Teacher: {snap.get('name')} ({snap.get('model', '')}), job {job.get('id')}"
        )
    licence = lineage.get("license") or (lineage.get("project") or {}).get("license")
    if licence:
        lines.append(f"- Licence of the data: {licence}")
    lines += [
        "",
        "## Method",
        "",
        f"- Method: {run.method}" + (f" (teacher: {run.teacher.name})" if run.teacher else ""),
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(run.config.items())],
        "",
        "## Results",
        "",
        f"- Steps: {result.get('global_step')} of {result.get('total_steps')}",
        f"- Final train loss: {_fmt(result.get('train_loss'))}",
        f"- Final eval loss: {_fmt(result.get('eval_loss'))}",
        f"- Tokens seen: {result.get('tokens_seen')}",
        f"- Truncation: {result.get('truncation')}",
        "",
        "## Code",
        "",
        f"- {code_version()}",
        "",
    ]
    return "\n".join(lines)
