"""Small batched greedy generation for quick checks of a trained student (CLI ``generate``).

Production teacher generation lives in generate_local.py; this is the minimal path the engine
and its benchmarks need: left-padded batches, greedy decoding, optional per-token top-k.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.engine.examples import prompt_ids


@dataclass
class Generated:
    text: str
    token_ids: list[int]
    topk_ids: np.ndarray | None = None  # [T, K]
    topk_logprobs: np.ndarray | None = None  # [T, K] float32


def load_for_inference(model_dir: str) -> tuple[Any, Any]:
    """A full model folder, or a LoRA output folder (loaded with its base through peft)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: torch.nn.Module
    if os.path.exists(os.path.join(model_dir, "adapter_config.json")):
        from peft import PeftModel

        from workers.engine.merge import base_model_of

        base = AutoModelForCausalLM.from_pretrained(base_model_of(model_dir))
        model = PeftModel.from_pretrained(base, model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    max_new_tokens: int = 64,
    batch_size: int = 16,
    topk: int = 0,
) -> list[Generated]:
    """Greedy completions of chat prompts; with topk > 0 also each step's top-k log-probs."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device
    results: list[Generated] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [prompt_ids(tokenizer, m) for m in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):  # left padding so every row ends at the prompt's end
            ids[i, width - len(e) :] = torch.tensor(e)
            mask[i, width - len(e) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=eos,
            return_dict_in_generate=True,
            output_logits=topk > 0,
        )
        new = out.sequences[:, width:].cpu()
        if topk > 0:
            step_lp = torch.log_softmax(torch.stack(out.logits, 1).float(), -1).cpu()
            top_lp, top_ids = step_lp.topk(topk, -1)
        for i in range(new.shape[0]):
            row = new[i].tolist()
            length = row.index(eos) + 1 if eos in row else len(row)
            gen = Generated(
                text=tokenizer.decode(row[:length], skip_special_tokens=True),
                token_ids=row[:length],
            )
            if topk > 0:
                gen.topk_ids = top_ids[i, :length].numpy()
                gen.topk_logprobs = top_lp[i, :length].numpy()
            results.append(gen)
    return results
