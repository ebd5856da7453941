"""Streamed downloads of built versions, shared by the pages and the API. Nothing is read whole
into memory: Parquet and the HF zip stream from their files, chat JSONL a row batch at a time."""

from __future__ import annotations

import re

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse

from distillapp.datasets import exports
from distillapp.datasets.models import DatasetVersion
from distillapp.datasets.services import version_file

FORMATS = ("jsonl", "parquet", "hf")


class NotDownloadable(Exception):
    pass


def _stem(version: DatasetVersion) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", version.dataset.name).strip("-") or "dataset"
    return f"{name}-v{version.number}"


def version_download(
    *, version: DatasetVersion, fmt: str, split: str | None = None
) -> HttpResponseBase:
    if not version.is_built:
        raise NotDownloadable("This version is not built yet.")
    if fmt == "parquet":
        path = version_file(version, "rows.parquet")
        if path is None:
            raise NotDownloadable("The version's files are missing from the artefact store.")
        return FileResponse(
            open(path, "rb"),  # noqa: SIM115 - FileResponse closes it
            as_attachment=True,
            filename=f"{_stem(version)}.parquet",
            content_type="application/vnd.apache.parquet",
        )
    if fmt == "hf":
        path = version_file(version, exports.HF_ZIP)
        if path is None:
            raise NotDownloadable(
                "No Hugging Face export: the worker that built this version had no `datasets` "
                "package."
            )
        return FileResponse(
            open(path, "rb"),  # noqa: SIM115
            as_attachment=True,
            filename=f"{_stem(version)}-hf.zip",
            content_type="application/zip",
        )
    if fmt == "jsonl":
        path = version_file(version, "rows.parquet")
        if path is None:
            raise NotDownloadable("The version's files are missing from the artefact store.")
        suffix = f"-{split}" if split else ""
        response = StreamingHttpResponse(
            exports.chat_jsonl_lines(path, split=split), content_type="application/jsonl"
        )
        response["Content-Disposition"] = f'attachment; filename="{_stem(version)}{suffix}.jsonl"'
        return response
    raise NotDownloadable(f"Unknown format: {fmt}.")
