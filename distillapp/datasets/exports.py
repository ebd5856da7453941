"""Exports of a built version: chat JSONL (streamed from the Parquet file), Parquet, and a Hugging
Face `datasets` folder (`save_to_disk`, zipped, with a dataset card), which the build writes on the
worker (it needs the `datasets` package) from Arrow streams written beside the Parquet file."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distillapp.datasets.writer import HF_SCHEMA, hf_stream_name

HF_ZIP = "hf.zip"
SPLITS = ("train", "validation")


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


def hf_available() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def write_hf_zip(folder: Path, *, card: str) -> bool:
    """Write `hf.zip` (a `DatasetDict.save_to_disk` folder plus README.md) into the version's
    folder from the Arrow streams the writer left there (`writer.hf_stream_name`), memory-mapped,
    so no split is ever whole in memory. Removes the streams. Returns False, writing no zip,
    when the `datasets` package is not installed."""
    streams = {split: folder / hf_stream_name(split) for split in SPLITS}
    try:
        try:
            import datasets
        except ImportError:
            return False
        from datasets.table import InMemoryTable

        datasets.disable_progress_bars()
        splits = {}
        for split, stream in streams.items():
            if stream.is_file():
                splits[split] = datasets.Dataset.from_file(str(stream), in_memory=False)
            elif split == "train":
                splits[split] = datasets.Dataset(InMemoryTable(HF_SCHEMA.empty_table()))
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            out = Path(tmp) / "dataset"
            datasets.DatasetDict(splits).save_to_disk(str(out))
            (out / "README.md").write_text(card, encoding="utf-8")
            with zipfile.ZipFile(
                folder / HF_ZIP, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
            ) as zf:
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        zf.write(path, Path("dataset") / path.relative_to(out))
            shutil.rmtree(out, ignore_errors=True)
        return True
    finally:
        for stream in streams.values():
            stream.unlink(missing_ok=True)
