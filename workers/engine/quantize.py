"""Weight-only quantisation of a merged (full-precision) model with torchao, and what it cost.

The input must be a plain model folder (a merged LoRA or a full fine-tune): quantising happens
after merging, never before, so the adapter is never folded into rounded weights. The report
gives the size on disk of both and their mean token loss on the validation examples.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

REPORT_FILE = "quantization.json"


class QuantizeError(ValueError):
    pass


def int4_supported() -> str | None:
    """None when int4 weight-only works here, else why not."""
    import torch

    if not torch.cuda.is_available():
        return "int4 weight-only quantisation needs a CUDA GPU (torchao's int4 kernels); use int8."
    major, _minor = torch.cuda.get_device_capability()
    if major < 8:
        return "int4 weight-only quantisation needs a GPU of compute capability 8.0 or newer."
    return None


def _torchao_config(scheme: str) -> Any:
    """torchao's config for `scheme` (int8, or int4 where a GPU allows it)."""
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if scheme == "int4":
        why = int4_supported()
        if why:
            raise QuantizeError(why)
        return Int4WeightOnlyConfig()
    if scheme == "int8":
        return Int8WeightOnlyConfig()
    raise QuantizeError(f"unknown scheme {scheme!r}; choose int8 or int4")


def _folder_size(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _d, files in os.walk(folder) for f in files
    )


def _eval_loss(model: Any, tokenizer: Any, eval_data: str, max_length: int) -> float | None:
    """Mean cross-entropy over the completion tokens of the examples (sft formatting)."""
    import torch

    from workers.engine.data import load_records
    from workers.engine.examples import build_sequences

    records = load_records(eval_data, "sft")
    sequences, _report = build_sequences(records, tokenizer, "sft", max_length, False)
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for seq in sequences:
            ids = torch.tensor([seq.input_ids], device=device)
            targets = torch.tensor([seq.targets], device=device)  # aligned with the logits
            logits = model(input_ids=ids).logits.float()
            mask = targets != -100
            if not mask.any():
                continue
            total += float(
                torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
            )
            count += int(mask.sum())
    return total / count if count else None


def quantize(
    model_dir: str,
    out_dir: str,
    *,
    scheme: str = "int8",
    eval_data: str | None = None,
    max_length: int = 1024,
) -> dict[str, Any]:
    """Quantise `model_dir` into `out_dir`; returns sizes and validation losses before/after."""
    if os.path.exists(os.path.join(model_dir, "adapter_config.json")) and not os.path.exists(
        os.path.join(model_dir, "config.json")
    ):
        raise QuantizeError(f"{model_dir} is a LoRA adapter: merge it first, then quantise.")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        raise QuantizeError(f"{model_dir} holds no model (config.json is missing).")
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise QuantizeError(
            "torchao is not installed on this worker (pip install torchao)."
        ) from exc
    import torch
    from torchao.quantization import quantize_
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _torchao_config(scheme)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(device).eval()
    before = _eval_loss(model, tokenizer, eval_data, max_length) if eval_data else None
    if scheme == "int4":
        model = model.to(torch.bfloat16)
    quantize_(model, config)
    after = _eval_loss(model, tokenizer, eval_data, max_length) if eval_data else None
    os.makedirs(out_dir, exist_ok=True)
    # torchao tensor subclasses are not safetensors-serialisable: a torch state dict it is, with
    # the config and tokenizer beside it (`load_quantized` reads it back).
    torch.save(model.state_dict(), os.path.join(out_dir, "pytorch_model.bin"))
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    for name in ("run.json", "summary.json"):
        if os.path.exists(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), os.path.join(out_dir, name))
    report = {
        "config": scheme,  # what `load_quantized` re-applies before it loads the state dict
        "scheme": f"{scheme} weight-only (torchao)",
        "device": device,
        "size_bytes": _folder_size(out_dir),
        "source_size_bytes": _folder_size(model_dir),
        "eval_loss": after,
        "source_eval_loss": before,
        "loss_increase": (after - before)
        if after is not None and before is not None and math.isfinite(after)
        else None,
    }
    with open(os.path.join(out_dir, REPORT_FILE), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2)
    return report


def is_quantized(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, REPORT_FILE))


def load_quantized(folder: str, *, device: str) -> Any:
    """The model `quantize` wrote to `folder`, on `device`, ready for inference.

    `from_pretrained` cannot read it: the state dict holds torchao tensor subclasses, and tying the
    embeddings compares a float weight with a quantised one. So the model is built from its config,
    quantised with the same scheme (which gives every layer the right tensor type) and only then
    given the stored weights. torchao registers its tensors as safe globals: `weights_only` holds.
    """
    import torch
    from torchao.quantization import quantize_
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(os.path.join(folder, REPORT_FILE), encoding="utf-8") as fh:
        report = json.load(fh)
    scheme = report.get("config") or str(report.get("scheme", "")).split(" ", 1)[0]
    config = _torchao_config(scheme)
    model: Any = AutoModelForCausalLM.from_config(
        AutoConfig.from_pretrained(folder),
        dtype=torch.bfloat16 if scheme == "int4" else torch.float32,
    )
    model = model.to(device).eval()
    quantize_(model, config)
    state = torch.load(
        os.path.join(folder, "pytorch_model.bin"), map_location=device, weights_only=True
    )
    model.load_state_dict(state, assign=True, strict=True)
    return model
