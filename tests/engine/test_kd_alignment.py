"""The KD loss the Trainer optimises, checked end to end against a from-scratch computation.

The engine's path is: JSONL -> load_records -> build_sequences -> Collator (right padding, top-k
rows placed at the logit positions) -> DistillTrainer.compute_loss -> kd_loss (closed-form
gradient). The check below uses none of it: each raw JSONL row is run through the student
unpadded, the logit just before generated token i is compared with the row's top-k for token i,
and the textbook tempered KL and cross-entropy are written out densely. K = V, so the stored
top-k is the teacher's whole distribution and no tail bucket is involved.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from workers.engine.callbacks import TokenMeter
from workers.engine.data import load_records
from workers.engine.examples import Collator, build_sequences, prompt_ids
from workers.engine.quickgen import generate
from workers.engine.toy import char_tokenizer, tiny_llama
from workers.engine.train import DistillTrainer

torch = pytest.importorskip("torch")

TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
PROMPTS = ["ab", "cab=", "b=", "aacb=", "c", "bca="]  # different lengths: left and right padding


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _kd_file(tmp_path: Path) -> tuple[Path, object, int]:
    tok = char_tokenizer("abc=", chat_template=TEMPLATE)
    vocab = len(tok)
    teacher = tiny_llama(vocab, hidden=32, seed=1, max_positions=32).eval()
    with torch.no_grad():  # a confident teacher, so that its rows differ from one token to the next
        teacher.lm_head.weight.mul_(40)
    outs = generate(
        teacher, tok, [_messages(p) for p in PROMPTS], max_new_tokens=4, batch_size=6, topk=vocab
    )
    path = tmp_path / "kd.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for prompt, out in zip(PROMPTS, outs, strict=True):
            assert out.topk_ids is not None and out.topk_logprobs is not None
            row = {
                "messages": _messages(prompt),
                "token_ids": out.token_ids,
                "topk_ids": out.topk_ids.tolist(),
                # float16 as a shard stores them
                "topk_logprobs": out.topk_logprobs.astype("float16").astype(float).tolist(),
            }
            fh.write(json.dumps(row) + "\n")
    return path, tok, vocab


def _independent_loss(student, tok, path: Path, vocab: int, temperature: float, alpha: float):  # type: ignore[no-untyped-def]
    kls, ces = [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        p = prompt_ids(tok, row["messages"])
        gen = row["token_ids"]
        logits = student(torch.tensor([p + gen])).logits[0]
        for i, token in enumerate(gen):
            z = logits[len(p) - 1 + i]  # the logit that predicts generated token i
            teacher_lp = torch.full((vocab,), float("-inf"))
            teacher_lp[torch.tensor(row["topk_ids"][i])] = torch.tensor(row["topk_logprobs"][i])
            q = torch.softmax(teacher_lp / temperature, -1)
            log_s = torch.log_softmax(z / temperature, -1)
            kls.append(temperature**2 * (q * (q.log() - log_s)).sum())
            ces.append(-torch.log_softmax(z, -1)[token])
    return alpha * torch.stack(kls).mean() + (1 - alpha) * torch.stack(ces).mean()


@pytest.mark.parametrize("temperature, alpha", [(2.0, 0.5), (1.0, 1.0)])
def test_trainer_kd_loss_and_gradients_match_a_from_scratch_computation(
    tmp_path: Path, temperature: float, alpha: float
) -> None:
    path, tok, vocab = _kd_file(tmp_path)
    sequences, _ = build_sequences(load_records(str(path), "kd"), tok, "kd", 32, False)
    batch = Collator(tok.pad_token_id, with_topk=True)(sequences)
    assert batch["topk_ids"].shape[-1] == vocab  # the whole distribution: exact KL
    student = tiny_llama(vocab, hidden=32, seed=0, max_positions=32)
    trainer_like = SimpleNamespace(alpha=alpha, temperature=temperature, meter=TokenMeter())

    loss = DistillTrainer.compute_loss(trainer_like, student, batch)  # type: ignore[arg-type]
    loss.backward()
    engine_grads = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    expected = _independent_loss(student, tok, path, vocab, temperature, alpha)
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for got, want in zip(engine_grads, (p.grad for p in student.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_a_one_position_shift_of_the_topk_rows_would_be_caught(tmp_path: Path) -> None:
    """Guards the test above: the from-scratch loss is sensitive to an off-by-one alignment."""
    path, tok, vocab = _kd_file(tmp_path)
    sequences, _ = build_sequences(load_records(str(path), "kd"), tok, "kd", 32, False)
    for seq in sequences:  # each token's top-k moved to the next token's position
        assert seq.topk_ids is not None and seq.topk_logprobs is not None
        seq.topk_ids = np.roll(seq.topk_ids, 1, axis=0)
        seq.topk_logprobs = np.roll(seq.topk_logprobs, 1, axis=0)
    batch = Collator(tok.pad_token_id, with_topk=True)(sequences)
    student = tiny_llama(vocab, hidden=32, seed=0, max_positions=32)
    trainer_like = SimpleNamespace(alpha=1.0, temperature=1.0, meter=TokenMeter())
    with torch.no_grad():
        shifted = DistillTrainer.compute_loss(trainer_like, student, batch)  # type: ignore[arg-type]
        expected = _independent_loss(student, tok, path, vocab, 1.0, 1.0)
    assert abs(shifted.item() - expected.item()) > 1e-3, (shifted.item(), expected.item())
