"""Parsing of the teacher and launch forms into service arguments (plain functions, no Django forms)."""

from __future__ import annotations

from typing import Any

from django.http import QueryDict

from distillapp.generation.decoding import DECODING_KEYS


def _stop_list(raw: str) -> list[str] | None:
    lines = [line for line in raw.replace("\r\n", "\n").split("\n") if line != ""]
    # Escapes let a stop string be a newline or a tab.
    return [
        line.encode().decode("unicode_escape") if "\\" in line else line for line in lines
    ] or None


def decoding_from_post(post: QueryDict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in DECODING_KEYS:
        raw = post.get(prefix + key, "")
        if key == "stop":
            value: Any = _stop_list(raw)
        else:
            value = raw.strip() if key != "system_prompt" else raw
        if value not in (None, ""):
            out[key] = value
    return out


def teacher_kwargs_from_post(post: QueryDict) -> dict[str, Any]:
    return {
        "name": post.get("name", ""),
        "base_url": post.get("base_url", ""),
        "model": post.get("model", ""),
        "model_path": post.get("model_path", ""),
        "device": post.get("device", "auto"),
        "dtype": post.get("dtype", "auto"),
        "batch_size": post.get("batch_size", "") or 16,
        "concurrency": post.get("concurrency", "") or 16,
        "requests_per_minute": post.get("requests_per_minute", "").strip() or None,
        "tokens_per_minute": post.get("tokens_per_minute", "").strip() or None,
        "price_input_per_m": post.get("price_input_per_m", "").strip() or 0,
        "price_output_per_m": post.get("price_output_per_m", "").strip() or 0,
        "decoding": decoding_from_post(post),
    }


def metadata_from_text(raw: str) -> dict[str, str]:
    """`key=value` lines (or `key: value`) as a metadata filter."""
    out: dict[str, str] = {}
    for line in raw.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if not line:
            continue
        sep = "=" if "=" in line else ":"
        key, _, value = line.partition(sep)
        if key.strip():
            out[key.strip()] = value.strip()
    return out
