"""Losses for distillation from a teacher's stored sparse top-k log-probabilities.

How temperature meets stored log-probs
--------------------------------------
A generation job stores, per generated token, the teacher's K most likely ids and their natural
log-probabilities ``l_i = log p_i`` at temperature 1 (after its own softmax over the full
vocabulary). The logits themselves are gone, so the tempered teacher ``softmax(z_t / T)`` is rebuilt
from the probabilities, using ``softmax(z/T)_i ∝ exp(z_i/T) ∝ p_i^(1/T)``:

* Buckets: the K stored ids, plus one *tail* bucket for every other id, with teacher mass
  ``p_tail = max(0, 1 - Σ_i p_i)``. When the stored ids already cover the whole vocabulary the tail
  bucket does not exist (``p_tail := 0``), which makes the K = V case exact.
* Tempered teacher over the K + 1 buckets: ``q_b = p_b^(1/T) / Σ_c p_c^(1/T)``, computed in log space
  as ``softmax([l_1/T, ..., l_K/T, log(p_tail)/T])``. For the K top-k buckets this is the exact
  ratio of the tempered teacher; tempering the tail as one bucket is an approximation, because the
  true tempered tail mass Σ_{j∉K} p_j^(1/T) depends on how ``p_tail`` is spread over the tail (for
  T > 1 it is at least ``p_tail^(1/T)``, so the tail is, if anything, under-weighted).
* Student: ``log s = log_softmax(z_s / T)`` over its full vocabulary; its tail bucket is the mass of
  every id outside the K stored ones, ``log s_tail = logsumexp_{j∉K}(z_s,j / T) - logsumexp(z_s / T)``.
* Loss per position: ``T² · Σ_b q_b (log q_b - log s_b)``; the mean over masked positions is returned.

So ``kd_loss`` already includes the T² factor; the training objective is
``α · kd_loss(...) + (1 - α) · CE`` (α · T² · KL + (1 - α) · CE). With K = V and the teacher's full
log-softmax it equals the textbook ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``.

Padding: entries with log-prob ``-inf`` (fewer than K alternatives came back) carry no mass and
are ignored. Positions where the mask is false contribute nothing, not even to the mean.
"""

from __future__ import annotations

from typing import Any

import torch

# Aim for about this many logits per chunk so the temporaries stay small next to [B, S, V].
_CHUNK_ELEMENTS = 4 * 1024 * 1024


def _teacher_buckets(
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    vocab: int,
    temperature: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tempered teacher over K + 1 buckets for N positions: (ids, q_topk, q_tail, is_topk[N, V])."""
    lp = topk_logprobs.to(dtype)
    valid = torch.isfinite(lp)
    # Padded slots point at the row's first id so scatters stay harmless; their q is 0.
    ids = torch.where(valid, topk_ids, topk_ids[:, :1]).long()
    is_topk = torch.zeros(ids.shape[0], vocab, dtype=torch.bool, device=ids.device)
    is_topk.scatter_(1, ids, True)
    tail_exists = is_topk.sum(1) < vocab
    p_tail = (1.0 - torch.where(valid, lp.exp(), 0.0).sum(1)).clamp_min(0.0)
    p_tail = torch.where(tail_exists, p_tail, torch.zeros_like(p_tail))
    scaled = torch.cat([lp / temperature, (p_tail.log() / temperature)[:, None]], dim=1)
    q = torch.softmax(scaled, dim=1)
    return ids, q[:, :-1], q[:, -1], is_topk


def _chunk_loss_and_grad(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    temperature: float,
    want_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed loss over N rows of logits [N, V] and, if asked, d(sum)/d(logits) in closed form."""
    vocab = logits.shape[-1]
    ids, q_k, q_tail, is_topk = _teacher_buckets(
        topk_ids, topk_logprobs, vocab, temperature, logits.dtype
    )
    u = logits / temperature
    lse = torch.logsumexp(u, dim=1)
    log_s_k = u.gather(1, ids) - lse[:, None]
    tail_u = u.masked_fill(is_topk, float("-inf"))
    del u
    tail_lse = torch.logsumexp(tail_u, dim=1)
    has_tail = q_tail > 0
    # Rows without a tail get a finite stand-in so no -inf - -inf appears; their q_tail is 0.
    tail_lse_safe = torch.where(torch.isfinite(tail_lse), tail_lse, torch.zeros_like(tail_lse))
    log_s_tail = tail_lse_safe - lse

    kl_k = torch.where(q_k > 0, q_k * (q_k.clamp_min(1e-300).log() - log_s_k), 0.0).sum(1)
    kl_tail = torch.where(has_tail, q_tail * (q_tail.clamp_min(1e-300).log() - log_s_tail), 0.0)
    t2 = temperature * temperature
    loss_sum = t2 * (kl_k + kl_tail).sum()
    if not want_grad:
        return loss_sum, None

    # d/dz_j of T²·KL = T · (s_j - q_j·[j∈K] - q_tail · s_j / s_tail · [j∉K]); derivation in docs/engine.md.
    grad = torch.exp(tail_u - tail_lse_safe[:, None]).mul_(-q_tail[:, None])
    del tail_u
    grad.add_(torch.exp(logits / temperature - lse[:, None]))
    grad.scatter_add_(1, ids, -q_k)
    grad.mul_(temperature)
    return loss_sum, grad


class _ChunkedKD(torch.autograd.Function):
    """Loss and gradient computed together chunk by chunk; only the gradient [B, S, V] is kept."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student_logits: torch.Tensor,
        topk_ids: torch.Tensor,
        topk_logprobs: torch.Tensor,
        mask: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        vocab = student_logits.shape[-1]
        flat = student_logits.reshape(-1, vocab)
        flat_ids = topk_ids.reshape(-1, topk_ids.shape[-1])
        flat_lp = topk_logprobs.reshape(-1, topk_logprobs.shape[-1])
        rows = mask.reshape(-1).nonzero().squeeze(1)
        count = int(rows.numel())
        want_grad = ctx.needs_input_grad[0]
        compute_dtype = torch.promote_types(student_logits.dtype, torch.float32)
        grad_buf = torch.zeros_like(flat) if want_grad else None
        total = torch.zeros((), dtype=compute_dtype, device=student_logits.device)
        chunk = max(1, _CHUNK_ELEMENTS // vocab)
        for start in range(0, count, chunk):
            idx = rows[start : start + chunk]
            loss_sum, grad = _chunk_loss_and_grad(
                flat.index_select(0, idx).to(compute_dtype),
                flat_ids.index_select(0, idx),
                flat_lp.index_select(0, idx),
                temperature,
                want_grad,
            )
            total += loss_sum
            if grad_buf is not None and grad is not None:
                grad_buf.index_copy_(0, idx, grad.to(grad_buf.dtype))
        denom = max(count, 1)
        if grad_buf is not None:
            grad_buf.div_(denom)
        # Kept on ctx rather than save_for_backward: backward scales it in place, once.
        ctx.grad_buf = None if grad_buf is None else grad_buf.view_as(student_logits)
        return (total / denom).to(student_logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        grad_buf = ctx.grad_buf
        if grad_buf is None:
            raise RuntimeError(
                "kd_loss supports one backward pass per forward (no retain_graph reuse)"
            )
        ctx.grad_buf = None
        # Scaled in place: a copy would double the peak at exactly the moment it is highest.
        return grad_buf.mul_(grad_output.to(grad_buf.dtype)), None, None, None, None


def kd_loss(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """T² · KL(tempered teacher ‖ tempered student) over stored top-k plus a tail bucket.

    Shapes: student_logits [B, S, V], topk_ids [B, S, K] (long), topk_logprobs [B, S, K]
    (natural log at temperature 1, ``-inf`` for padding), mask [B, S] (bool). Row (b, s) of the
    logits is compared with row (b, s) of the top-k, so callers align the teacher's token t with
    the logit that predicts it. Returns the mean over masked positions (0 when none are masked).
    See the module docstring for exactly how temperature is applied.

    Computed in chunks of positions inside one autograd node: the forward pass writes the
    closed-form gradient of each chunk into one buffer, so peak memory is that buffer (the size
    of the logits, as any backward pass needs) plus one chunk of float32 temporaries. The
    backward pass can run once per forward (no ``retain_graph`` reuse).
    """
    if student_logits.dim() != 3:
        raise ValueError(f"student_logits must be [B, S, V], got {tuple(student_logits.shape)}")
    if topk_ids.shape != topk_logprobs.shape or topk_ids.shape[:2] != student_logits.shape[:2]:
        raise ValueError(
            f"shapes disagree: logits {tuple(student_logits.shape)}, ids {tuple(topk_ids.shape)}, "
            f"logprobs {tuple(topk_logprobs.shape)}"
        )
    if mask.shape != student_logits.shape[:2]:
        raise ValueError(f"mask must be [B, S], got {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    return _ChunkedKD.apply(
        student_logits.contiguous(), topk_ids, topk_logprobs, mask.bool(), float(temperature)
    )


def kd_loss_reference(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """The same loss written the plain way: dense [B, S, V] tensors and autograd.

    Used by the tests as an independent check and by bench/kd_loss.py as the naive baseline.
    """
    vocab = student_logits.shape[-1]
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    logits = student_logits.to(dtype)
    lp = topk_logprobs.to(dtype)
    valid = torch.isfinite(lp)
    ids = torch.where(valid, topk_ids, topk_ids[..., :1]).long()
    is_topk = torch.zeros(*logits.shape, dtype=torch.bool, device=logits.device)
    is_topk.scatter_(-1, ids, True)
    tail_exists = is_topk.sum(-1) < vocab
    p_tail = (1.0 - torch.where(valid, lp.exp(), 0.0).sum(-1)).clamp_min(0.0)
    p_tail = torch.where(tail_exists, p_tail, torch.zeros_like(p_tail))
    q = torch.softmax(
        torch.cat([lp / temperature, (p_tail.log() / temperature)[..., None]], -1), -1
    )
    q_dense = torch.zeros_like(logits).scatter_add(-1, ids, q[..., :-1])
    log_s = torch.log_softmax(logits / temperature, dim=-1)
    s_tail = torch.where(is_topk, 0.0, log_s.exp()).sum(-1)
    kl_k = torch.where(q_dense > 0, q_dense * (q_dense.clamp_min(1e-300).log() - log_s), 0.0).sum(
        -1
    )
    q_tail = q[..., -1]
    kl_tail = torch.where(
        q_tail > 0, q_tail * (q_tail.clamp_min(1e-300).log() - s_tail.clamp_min(1e-300).log()), 0.0
    )
    per_pos = temperature**2 * (kl_k + kl_tail)
    m = mask.bool()
    return per_pos[m].sum() / m.sum().clamp_min(1)


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    """Mean token cross-entropy where ``targets`` (already aligned with ``logits``) is not ignored."""
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index
    )
