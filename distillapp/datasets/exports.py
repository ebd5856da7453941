"""Exports of a built version: chat JSONL (streamed from the Parquet file), Parquet, and a Hugging
Face `datasets` folder (`save_to_disk`'s layout, zipped, with a dataset card), which the build
writes on the worker (it needs the `datasets` package) as the rows come (`writer.HfZip`)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distillapp.datasets.batches import MESSAGE_TYPE
from distillapp.datasets.writer import HF_SCHEMA, HF_ZIP, HfLayout

__all__ = ["HF_ZIP", "chat_jsonl_lines", "dataset_card", "file_chunks", "hf_layout"]


def chat_jsonl_lines(parquet_path: Path, *, split: str | None = None) -> Iterator[bytes]:
    """One `{"messages": [...prompt, {"role": "assistant", ...}]}` line per row, read a batch at a
    time so a million-row export never sits whole in memory."""
    pf = pq.ParquetFile(parquet_path)
    for batch in pf.iter_batches(batch_size=2000, columns=["split", "messages", "completion"]):
        splits = batch.column(0).to_pylist()
        prompts = batch.column(1).to_pylist()
        targets = batch.column(2).to_pylist()
        lines = []
        for row_split, prompt, target in zip(splits, prompts, targets, strict=True):
            if split is not None and row_split != split:
                continue
            messages = [*json.loads(prompt), {"role": "assistant", "content": target}]
            lines.append(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
        if lines:
            yield "".join(lines).encode("utf-8", "surrogatepass")


def file_chunks(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block


def dataset_card(
    *, title: str, sha256: str, counts: dict[str, Any], lineage: dict[str, Any]
) -> str:
    licence = lineage.get("license") or "other"
    jobs = lineage.get("jobs", [])
    lines = [
        "---",
        f"license: {json.dumps(licence)}",
        "task_categories:",
        "- text-generation",
        "---",
        "",
        f"# {title}",
        "",
        "Prompt/response pairs distilled from a teacher model and reviewed by people, exported by",
        "Distillery. Each row has `messages` (the prompt followed by the assistant's target).",
        "",
        f"- SHA-256 of the canonical rows: `{sha256}`",
        f"- Rows: {counts.get('rows', 0)} (train {counts.get('train', 0)}, validation "
        f"{counts.get('validation', 0)})",
        f"- Rows that are exactly the teacher's output: {counts.get('teacher_exact', 0)}; "
        f"with the teacher's top-k: {counts.get('kd_rows', 0)}",
        f"- Target characters: {counts.get('target_chars', 0)}",
        f"- Built by {lineage.get('built_by') or 'unknown'} at {lineage.get('built_at', '')}",
        "",
        "## Lineage",
        "",
        "### Prompt sets",
        "",
    ]
    for ps in lineage.get("prompt_sets", []):
        lines.append(f"- {ps.get('name')} (`{ps.get('source_name')}`, sha256 `{ps.get('sha256')}`)")
    lines += ["", "### Teachers", ""]
    for job in jobs:
        snap = job.get("teacher_snapshot", {})
        lines.append(
            f"- job {job.get('id')}: {snap.get('name', '')} / {snap.get('model', '')}, decoding "
            f"`{json.dumps(snap.get('decoding', {}), sort_keys=True)}`"
        )
    reviewers = lineage.get("reviews", {}).get("by_reviewer", [])
    lines += ["", "### Review", ""]
    for r in reviewers:
        lines.append(f"- {r.get('reviewer')}: {json.dumps(r.get('decisions', {}), sort_keys=True)}")
    lines += [
        "",
        "### Recipe",
        "",
        "```json",
        json.dumps(lineage.get("recipe", {}), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def hf_layout(*, cache: Path | None = None) -> HfLayout | None:
    """What `datasets.DatasetDict.save_to_disk` writes besides the rows, as the installed
    `datasets` writes it, so `writer.HfZip` can write the same folder into `hf.zip` while the
    rows come. None when `datasets` is not installed (the version then has no `hf.zip`).

    It is taken from a one-row dataset saved to a temporary folder, once per `datasets` version:
    kept in memory and in `cache` (a folder), so a worker imports `datasets` (a second or more of
    imports) only the first time it meets a version."""
    try:
        version = importlib.metadata.version("datasets")
    except importlib.metadata.PackageNotFoundError:
        return None
    if version in _HF_LAYOUTS:
        return _HF_LAYOUTS[version]
    path = cache / f"hf-layout-{version}.json" if cache is not None else None
    layout = None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            layout = HfLayout.from_json(path.read_text(encoding="utf-8"))
    if layout is None:
        layout = _hf_layout_from_datasets()
        if layout is None:
            return None
        if path is not None:
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(f".{path.name}.{os.getpid()}")
                partial.write_text(layout.to_json(), encoding="utf-8")
                partial.replace(path)
    _HF_LAYOUTS[version] = layout
    return layout


_HF_LAYOUTS: dict[str, HfLayout] = {}


def _hf_layout_from_datasets() -> HfLayout | None:
    try:
        import datasets
    except ImportError:
        return None
    from datasets.table import InMemoryTable

    datasets.disable_progress_bars()
    one = pa.table(
        [
            pa.array([[{"role": "user", "content": ""}]], type=MESSAGE_TYPE),
            pa.array([0], type=pa.int64()),
            pa.array([""]),
            pa.array([False]),
        ],
        schema=HF_SCHEMA,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dataset"
        datasets.DatasetDict({"train": datasets.Dataset(InMemoryTable(one))}).save_to_disk(str(out))
        split = out / "train"
        state = json.loads((split / "state.json").read_text(encoding="utf-8"))
        (data_file,) = [f["filename"] for f in state["_data_files"]]
        with pa.ipc.open_stream(str(split / data_file)) as reader:
            metadata = dict(reader.schema.metadata or {})
        return HfLayout(
            schema_metadata=metadata,
            dataset_info=(split / "dataset_info.json").read_text(encoding="utf-8"),
            state=state,
            data_file=data_file,
        )
