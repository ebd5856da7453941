"""Batched generation with a local `transformers` causal LM. Plain data in and out, no Django.

- Prompts are chat messages, rendered with the tokenizer's chat template when it has one.
- Batches are left-padded with an attention mask, so every row continues from its own last token.
- Greedy when temperature is 0 (or unset), sampled otherwise (temperature, top_p, seed).
- Top-k log-probs come from the raw logits of every generation step (`output_logits`), i.e. the
  teacher's own distribution before temperature or top-p reshape it, which is what logit
  distillation wants; the chosen token's log-prob comes from the same distribution.

torch and transformers are imported inside functions: the web imports `model_fingerprint`.

`python -m workers.engine.generate_local --probe FOLDER` loads a model and generates a few tokens,
printing one JSON line (used by "Test teacher" for local teachers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.engine import quantize

FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_fingerprint(model_path: str) -> str:
    """sha256 over config.json and the tokenizer files (names and bytes); "" if the folder is absent."""
    folder = Path(model_path)
    if not folder.is_dir():
        return ""
    digest = hashlib.sha256()
    found = False
    for name in FINGERPRINT_FILES:
        path = folder / name
        if path.is_file():
            found = True
            digest.update(name.encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest() if found else ""


def weights_size(model_path: str) -> int:
    folder = Path(model_path)
    if not folder.is_dir():
        return 0
    return sum(
        p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )


@dataclass(frozen=True)
class LocalSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_logprobs: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    system_prompt: str = ""

    @classmethod
    def from_decoding(cls, d: dict[str, Any]) -> LocalSettings:
        stop = d.get("stop") or ()
        top_p = d.get("top_p")
        return cls(
            max_new_tokens=int(d.get("max_tokens") or 256),
            temperature=float(d.get("temperature") or 0.0),
            top_p=float(top_p if top_p is not None else 1.0),
            top_logprobs=int(d.get("top_logprobs") or 0),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            seed=d.get("seed"),
            system_prompt=d.get("system_prompt") or "",
        )


@dataclass(frozen=True)
class LocalRequest:
    key: Any
    messages: list[dict[str, Any]]


@dataclass
class LocalResult:
    key: Any
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    token_ids: list[int] = field(default_factory=list)
    chosen_logprobs: list[float] = field(default_factory=list)
    topk_ids: Any = None  # np.ndarray [T, K] int64
    topk_logprobs: Any = None  # np.ndarray [T, K] float16

    def topk_blob(self) -> tuple[bytes | None, float | None]:
        """The DTK1 record (token ids) and the mean log-prob of the generated tokens."""
        from workers.engine import topk_format

        mean = (
            sum(self.chosen_logprobs) / len(self.chosen_logprobs) if self.chosen_logprobs else None
        )
        if self.topk_ids is None:
            return None, mean
        import numpy as np

        record = topk_format.TopkRecord(
            np.asarray(self.token_ids, dtype=np.int64), self.topk_ids, self.topk_logprobs
        )
        return topk_format.encode(record), mean


@dataclass
class LocalModel:
    model: Any
    tokenizer: Any
    device: Any
    path: str


def resolve_device(device: str) -> str:
    import torch

    if device in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype in ("", "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def load(model_path: str, *, device: str = "auto", dtype: str = "auto") -> LocalModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantize.is_quantized(model_path):
        model = quantize.load_quantized(model_path, device=dev)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=resolve_dtype(dtype, dev))
    # transformers wraps .to() with functools.wraps(nn.Module.to), which hides the bound self from mypy.
    model.to(dev)  # type: ignore[arg-type]
    model.eval()
    return LocalModel(model=model, tokenizer=tokenizer, device=dev, path=model_path)


def format_prompt(tokenizer: Any, messages: list[dict[str, Any]], system_prompt: str = "") -> str:
    msgs = [{"role": m.get("role", "user"), "content": str(m.get("content", ""))} for m in messages]
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    # No template (base models): a plain transcript that ends where the assistant speaks.
    return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"


def _generation_config(lm: LocalModel, s: LocalSettings) -> Any:
    from transformers import GenerationConfig

    tok = lm.tokenizer
    kwargs: dict[str, Any] = {
        "max_new_tokens": s.max_new_tokens,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        # Raw logits of every step stay in memory for the batch (B x T x V); asked only for top-k.
        "output_logits": s.top_logprobs > 0,
        "return_dict_in_generate": True,
    }
    if s.temperature and s.temperature > 0:
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if s.stop:
        kwargs["stop_strings"] = list(s.stop)
    return GenerationConfig(**kwargs)


def generate_batch(
    lm: LocalModel, requests: list[LocalRequest], s: LocalSettings, *, seed: int | None = None
) -> list[LocalResult]:
    """Generate for a batch of requests at once (left padding, attention mask)."""
    import torch

    if not requests:
        return []
    tok = lm.tokenizer
    started = time.perf_counter()
    texts = [format_prompt(tok, r.messages, s.system_prompt) for r in requests]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True)
    input_ids = enc["input_ids"].to(lm.device)
    attention_mask = enc["attention_mask"].to(lm.device)
    if seed is not None:
        torch.manual_seed(int(seed))
    extra: dict[str, Any] = {"tokenizer": tok} if s.stop else {}
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=_generation_config(lm, s),
            **extra,
        )
    prompt_len = input_ids.shape[1]
    generated = out.sequences[:, prompt_len:]
    chosen_all = topk_ids_all = topk_lps_all = None
    if s.top_logprobs > 0 and out.logits:
        chosen_steps, id_steps, lp_steps = [], [], []
        k = min(s.top_logprobs, out.logits[0].shape[-1])
        for t, step_logits in enumerate(
            out.logits
        ):  # one step at a time: no [B, T, V] float32 copy
            lp = torch.log_softmax(step_logits.float(), dim=-1)
            chosen_steps.append(lp.gather(-1, generated[:, t : t + 1]).squeeze(-1))
            values, indices = lp.topk(k, dim=-1)
            id_steps.append(indices)
            lp_steps.append(values.clamp(min=-65504.0))
        chosen_all = torch.stack(chosen_steps, dim=1).cpu()
        topk_ids_all = torch.stack(id_steps, dim=1).cpu().numpy().astype("int64")
        topk_lps_all = torch.stack(lp_steps, dim=1).cpu().numpy().astype("float16")
    eos_ids = _eos_ids(tok)
    latency_ms = int((time.perf_counter() - started) * 1000 / len(requests))
    results = []
    for row, req in enumerate(requests):
        ids = generated[row].tolist()
        length, finish = len(ids), "length"
        for i, t in enumerate(ids):
            if t in eos_ids:
                length, finish = i + 1, "stop"
                break
        ids = ids[:length]
        text_ids = [t for t in ids if t not in eos_ids]
        text = tok.decode(text_ids, skip_special_tokens=True)
        for stop in s.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        result = LocalResult(
            key=req.key,
            text=text,
            finish_reason=finish,
            prompt_tokens=int(attention_mask[row].sum().item()),
            completion_tokens=length,
            latency_ms=latency_ms,
            token_ids=ids,
        )
        if chosen_all is not None and length:
            # All three are filled together above.
            assert topk_ids_all is not None and topk_lps_all is not None
            result.chosen_logprobs = [float(x) for x in chosen_all[row, :length].tolist()]
            result.topk_ids = topk_ids_all[row, :length]
            result.topk_logprobs = topk_lps_all[row, :length]
        results.append(result)
    return results


def _eos_ids(tok: Any) -> set[int]:
    eos = tok.eos_token_id
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, list) else {int(eos)}


def batched(requests: Iterable[LocalRequest], size: int) -> Iterator[list[LocalRequest]]:
    batch: list[LocalRequest] = []
    for r in requests:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate_all(
    lm: LocalModel,
    requests: Iterable[LocalRequest],
    s: LocalSettings,
    *,
    batch_size: int = 16,
    on_batch: Callable[[list[LocalResult]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[LocalResult]:
    """Generate in batches; `on_batch` sees each batch's results, `should_stop` is asked between
    batches. With a seed, batch i uses seed+i, so a run is reproducible for the same batches."""
    out: list[LocalResult] = []
    for i, batch in enumerate(batched(requests, batch_size)):
        if should_stop is not None and should_stop():
            break
        seed = None if s.seed is None else int(s.seed) + i
        results = generate_batch(lm, batch, s, seed=seed)
        if on_batch is not None:
            on_batch(results)
        else:
            out.extend(results)
    return out


def probe(
    model_path: str, *, prompt: str = "Say hello.", max_new_tokens: int = 8, device: str = "cpu"
) -> dict[str, Any]:
    started = time.perf_counter()
    lm = load(model_path, device=device)
    result = generate_batch(
        lm,
        [LocalRequest(0, [{"role": "user", "content": prompt}])],
        LocalSettings(max_new_tokens=max_new_tokens),
    )[0]
    return {
        "ok": True,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "completion_tokens": result.completion_tokens,
        "latency_ms": int((time.perf_counter() - started) * 1000),
        "fingerprint": model_fingerprint(model_path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local teacher generation.")
    parser.add_argument("--probe", required=True, help="model folder to load and try")
    parser.add_argument("--prompt", default="Say hello.")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        print(
            json.dumps(
                probe(
                    args.probe,
                    prompt=args.prompt,
                    max_new_tokens=args.max_new_tokens,
                    device=args.device,
                )
            )
        )
    except Exception as exc:  # noqa: BLE001 - reported to the caller as data
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
