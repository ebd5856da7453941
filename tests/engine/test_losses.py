from __future__ import annotations

import pytest
import torch

from workers.engine.losses import kd_loss, kd_loss_reference


def _textbook(z_s: torch.Tensor, z_t: torch.Tensor, mask: torch.Tensor, t: float) -> torch.Tensor:
    p = torch.softmax(z_t / t, -1)
    kl = (p * (torch.log_softmax(z_t / t, -1) - torch.log_softmax(z_s / t, -1))).sum(-1)
    return t * t * kl[mask].mean()


def _full_topk(z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lp = torch.log_softmax(z_t, -1)
    lp, ids = lp.sort(-1, descending=True)
    return ids, lp


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
def test_full_vocab_equals_textbook_kl_in_float64(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    b, s, v = 2, 5, 11
    z_s = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 3
    z_t = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 3
    mask = torch.ones(b, s, dtype=torch.bool)
    ids, lp = _full_topk(z_t)
    got = kd_loss(z_s, ids, lp, mask, temperature)
    want = _textbook(z_s, z_t, mask, temperature)
    assert got.dtype == torch.float64
    assert abs(got.item() - want.item()) < 1e-5
    assert want.item() > 0.01  # a non-trivial comparison


def test_gradient_matches_textbook_autograd_at_full_vocab() -> None:
    g = torch.Generator().manual_seed(1)
    z_s = torch.randn(2, 4, 9, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(2, 4, 9, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    ids, lp = _full_topk(z_t)
    (grad_got,) = torch.autograd.grad(kd_loss(z_s, ids, lp, mask, 2.0) * 3.0, z_s)
    (grad_want,) = torch.autograd.grad(_textbook(z_s, z_t, mask, 2.0) * 3.0, z_s)
    torch.testing.assert_close(grad_got, grad_want, atol=1e-10, rtol=1e-8)


def test_gradient_with_tail_bucket_matches_dense_autograd_reference() -> None:
    g = torch.Generator().manual_seed(2)
    z_s = torch.randn(2, 6, 30, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(2, 6, 30, generator=g, dtype=torch.float64) * 2
    ids, lp = _full_topk(z_t)
    ids, lp = ids[..., :5].contiguous(), lp[..., :5].contiguous()
    lp[0, 0, 3:] = float("-inf")  # fewer alternatives came back at one position
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 5] = False
    loss = kd_loss(z_s, ids, lp, mask, 2.0)
    ref = kd_loss_reference(z_s, ids, lp, mask, 2.0)
    assert abs(loss.item() - ref.item()) < 1e-10
    (g1,) = torch.autograd.grad(loss, z_s)
    (g2,) = torch.autograd.grad(kd_loss_reference(z_s, ids, lp, mask, 2.0), z_s)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-8)


def test_masked_positions_are_ignored() -> None:
    g = torch.Generator().manual_seed(3)
    z_s = torch.randn(1, 4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(1, 4, 7, generator=g, dtype=torch.float64)
    ids, lp = _full_topk(z_t)
    mask = torch.tensor([[True, False, True, False]])
    base = kd_loss(z_s, ids, lp, mask, 2.0)
    garbage = z_s.detach().clone()
    garbage[0, 1] = 1e4  # anything at masked positions must not change the loss
    garbage[0, 3] = float("nan")
    assert kd_loss(garbage, ids, lp, mask, 2.0).item() == pytest.approx(base.item(), abs=1e-12)
    (grad,) = torch.autograd.grad(base, z_s)
    assert torch.all(grad[0, 1] == 0) and torch.all(grad[0, 3] == 0)
    expected = _textbook(z_s[:, [0, 2]], z_t[:, [0, 2]], torch.ones(1, 2, dtype=torch.bool), 2.0)
    assert base.item() == pytest.approx(expected.item(), abs=1e-10)


def test_tail_bucket_counts_mass_outside_topk() -> None:
    # Student equal to teacher: zero loss even with a truncated top-k (the tail matches too).
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 3, 50, generator=g, dtype=torch.float64) * 2
    ids, lp = _full_topk(z)
    ids, lp = ids[..., :5], lp[..., :5]
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert kd_loss(z, ids, lp, mask, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    # Moving student mass from the tail into the top-k (with the same top-k ratios) is penalised
    # only through the tail bucket, which a top-k-only KL would miss entirely.
    shifted = z.clone()
    shifted.scatter_add_(-1, ids, torch.full(ids.shape, 3.0, dtype=torch.float64))
    loss = kd_loss(shifted, ids, lp, mask, 1.0).item()
    p_tail = 1 - lp.exp().sum(-1)
    s = torch.softmax(shifted, -1)
    s_tail = 1 - s.gather(-1, ids).sum(-1)
    q_k = lp.exp()
    kl = (q_k * (lp - s.gather(-1, ids).log())).sum(-1) + p_tail * (p_tail.log() - s_tail.log())
    assert loss == pytest.approx(kl.mean().item(), abs=1e-10)
    assert loss > 0.1


def test_chunking_gives_the_same_result_as_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.engine.losses as losses

    g = torch.Generator().manual_seed(5)
    z_s = torch.randn(3, 17, 40, generator=g, requires_grad=True)
    z_t = torch.randn(3, 17, 40, generator=g)
    ids, lp = _full_topk(z_t)
    ids, lp = ids[..., :20], lp[..., :20].half()  # the stored format is float16
    mask = torch.rand(3, 17, generator=g) > 0.3
    whole = kd_loss(z_s, ids, lp, mask, 2.0)
    (g_whole,) = torch.autograd.grad(whole, z_s)
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 40 * 3)  # 3 rows per chunk
    chunked = kd_loss(z_s, ids, lp, mask, 2.0)
    (g_chunked,) = torch.autograd.grad(chunked, z_s)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    torch.testing.assert_close(g_chunked, g_whole)


def test_no_masked_positions_gives_zero_and_zero_grad() -> None:
    z_s = torch.randn(1, 2, 5, requires_grad=True)
    ids = torch.zeros(1, 2, 2, dtype=torch.long)
    lp = torch.full((1, 2, 2), -1.0)
    loss = kd_loss(z_s, ids, lp, torch.zeros(1, 2, dtype=torch.bool), 2.0)
    loss.backward()
    assert loss.item() == 0.0
    assert z_s.grad is not None and torch.all(z_s.grad == 0)


def test_a_second_backward_is_refused_clearly() -> None:
    z_s = torch.randn(1, 2, 5, requires_grad=True)
    ids = torch.zeros(1, 2, 1, dtype=torch.long)
    loss = kd_loss(z_s, ids, torch.full((1, 2, 1), -0.5), torch.ones(1, 2, dtype=torch.bool), 2.0)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()
