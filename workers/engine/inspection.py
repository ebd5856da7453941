"""Describe a base model folder without training it: what the app shows before a run starts.

Reads config.json, the tokenizer and the safetensors headers (parameter count and dtype without
loading a weight), so a 70B folder is inspected in seconds. Every problem a user can cause (a
missing folder, a corrupt config, weights or tokenizer) raises InspectionError with a sentence
that names the file; callers print it, never a traceback.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

# Bytes per element of safetensors dtypes (header "dtype" values).
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
# A fixed English paragraph: its characters per token let the app estimate tokens from characters.
_SAMPLE = (
    "The quick brown fox jumps over the lazy dog. Distillation trains a small student model on "
    "the outputs of a larger teacher, so it answers like the teacher at a fraction of the cost. "
    "What is 12 + 39? The answer is 51."
)


class InspectionError(ValueError):
    pass


def resolve_hub_id(hub_id: str, cache_dir: str | None) -> str:
    """The local snapshot folder of a hub id, from the cache only (workers never download)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return str(snapshot_download(hub_id, local_files_only=True, cache_dir=cache_dir))
    except HFValidationError as exc:
        raise InspectionError(f"{hub_id!r} is not a valid Hugging Face Hub id ({exc}).") from exc
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        raise InspectionError(
            f"{hub_id} is not in the model cache ({cache_dir}) and workers do not download. Put "
            f"it there first, e.g. `huggingface-cli download {hub_id} --cache-dir {cache_dir}`."
        ) from exc


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InspectionError(
            f"{what} ({path}) is not valid JSON: {exc.msg} at line {exc.lineno}."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InspectionError(f"{what} ({path}) cannot be read: {exc}.") from exc
    if not isinstance(data, dict):
        raise InspectionError(f"{what} ({path}) is not a JSON object.")
    return data


def _safetensors_header(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise InspectionError(f"{path} is corrupt: shorter than a safetensors header.")
            (size,) = struct.unpack("<Q", raw)
            if size > os.path.getsize(path) - 8 or size > 100 * 2**20:
                raise InspectionError(f"{path} is corrupt: its header length is impossible.")
            header = json.loads(fh.read(size))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InspectionError(f"{path} is corrupt: its header is not valid JSON.") from exc
    if not isinstance(header, dict):
        raise InspectionError(f"{path} is corrupt: its header is not a JSON object.")
    return header


def _weights(folder: str) -> tuple[int | None, str | None, list[str]]:
    """(parameter count, dtype, weight files) from safetensors headers; count None for .bin."""
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        bins = sorted(f for f in os.listdir(folder) if f.endswith(".bin") and "model" in f)
        if not bins:
            raise InspectionError(
                f"{folder} holds no weights (model.safetensors or pytorch_model.bin)."
            )
        return None, None, bins
    params, dtypes = 0, dict[str, int]()
    for name in files:
        for key, info in _safetensors_header(os.path.join(folder, name)).items():
            if key == "__metadata__":
                continue
            try:
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                dtype = str(info["dtype"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InspectionError(f"{folder}/{name} is corrupt: tensor {key!r}.") from exc
            params += count
            dtypes[dtype] = dtypes.get(dtype, 0) + count
    main = max(dtypes, key=lambda d: dtypes[d]) if dtypes else None
    return params, _DTYPE_NAMES.get(main or "", (main or "").lower() or None), files


def _size_on_disk(folder: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                continue
    return total


def _load_tokenizer(folder: str, what: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # transformers raises many kinds; the user needs the sentence
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InspectionError(
            f"the {what} tokenizer in {folder} cannot be loaded: {first}"
        ) from exc


def vocab_difference(student: Any, teacher: Any) -> str | None:
    """Why logit distillation between these tokenizers is impossible, or None when it works.

    Every teacher id must name the same token in the student (the engine's check_vocab then
    checks the ids a dataset really uses), and the special tokens must agree.
    """
    from workers.engine.vocab import VocabMismatchError, check_vocab

    if len(teacher) > len(student):
        return (
            f"the teacher's vocabulary has {len(teacher)} tokens, the student's {len(student)}; "
            "logit distillation needs the same vocabulary. SFT still works."
        )
    ids = list(range(len(teacher)))
    s_tokens, t_tokens = student.convert_ids_to_tokens(ids), teacher.convert_ids_to_tokens(ids)
    diff = [i for i, s, t in zip(ids, s_tokens, t_tokens, strict=True) if s != t]
    if diff:
        shown = ", ".join(f"id {i}: {t_tokens[i]!r} vs {s_tokens[i]!r}" for i in diff[:3])
        return (
            f"{len(diff)} of the teacher's {len(ids)} token ids name different tokens in the "
            f"student ({shown}); logit distillation needs the same vocabulary. SFT still works."
        )
    try:
        check_vocab(student, teacher, [], len(student))
    except VocabMismatchError as exc:
        return str(exc)
    return None


def inspect_model(folder: str, *, teachers: dict[str, str] | None = None) -> dict[str, Any]:
    """Architecture, parameters, vocabulary, chat template, context length, dtype and size of a
    model folder; with `teachers` ({name: folder}), whether KD against each is possible."""
    if not os.path.isdir(folder):
        raise InspectionError(f"{folder} is not a folder (or it does not exist).")
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        raise InspectionError(f"{folder} has no config.json: it is not a transformers model.")
    config = _read_json(config_path, "config.json")
    params, weight_dtype, files = _weights(folder)
    tokenizer = _load_tokenizer(folder, "model's")
    raw_text_config = config.get("text_config")
    text_config: dict[str, Any] = raw_text_config if isinstance(raw_text_config, dict) else {}
    merged = {**text_config, **config}
    context = next(
        (
            merged[k]
            for k in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
            if isinstance(merged.get(k), int)
        ),
        None,
    )
    n_tokens = len(tokenizer(_SAMPLE, add_special_tokens=False)["input_ids"]) or 1
    report: dict[str, Any] = {
        "folder": os.path.abspath(folder),
        "architecture": ", ".join(config.get("architectures") or [])
        or str(config.get("model_type") or "unknown"),
        "model_type": config.get("model_type"),
        "parameters": params,
        "vocab_size": len(tokenizer),
        "model_vocab_rows": merged.get("vocab_size"),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "context_length": context,
        "dtype": weight_dtype or config.get("torch_dtype") or config.get("dtype"),
        "size_bytes": _size_on_disk(folder),
        "weight_files": files,
        "chars_per_token": round(len(_SAMPLE) / n_tokens, 3),
        "teachers": {},
    }
    for name, teacher_dir in (teachers or {}).items():
        try:
            if not os.path.isdir(teacher_dir):
                raise InspectionError(f"the teacher's folder {teacher_dir} does not exist.")
            reason = vocab_difference(tokenizer, _load_tokenizer(teacher_dir, "teacher's"))
        except InspectionError as exc:
            reason = str(exc)
        report["teachers"][name] = {"kd": reason is None, "reason": reason or ""}
    return report
