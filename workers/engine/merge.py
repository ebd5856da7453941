"""Fold a LoRA adapter into its base model: a folder plain transformers can load without peft."""

from __future__ import annotations

import json
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def base_model_of(adapter_dir: str) -> str:
    """The base recorded at training time (run.json), else the adapter config's own pointer."""
    run_path = os.path.join(adapter_dir, "run.json")
    if os.path.exists(run_path):
        with open(run_path, encoding="utf-8") as fh:
            return str(json.load(fh)["base_model"])
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as fh:
        return str(json.load(fh)["base_model_name_or_path"])


def merge(adapter_dir: str, out_dir: str, base: str | None = None) -> str:
    """Write base + adapter as one model to ``out_dir`` (with the tokenizer and run.json)."""
    from peft import PeftModel

    if not os.path.exists(os.path.join(adapter_dir, "adapter_config.json")):
        raise ValueError(f"{adapter_dir} holds no LoRA adapter (a full fine-tune needs no merge)")
    base_path = base or base_model_of(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    os.makedirs(out_dir, exist_ok=True)
    merged.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    for name in ("run.json", "summary.json"):
        if os.path.exists(os.path.join(adapter_dir, name)):
            shutil.copy(os.path.join(adapter_dir, name), os.path.join(out_dir, name))
    return out_dir
