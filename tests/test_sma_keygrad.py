"""The SMA layer's key-gradient hand-off: the attention's backward gives the selected head's
key-gradient rows to the key projection directly instead of a dense zero-filled gradient."""

from __future__ import annotations

import pytest
import torch

import speechattn.nn.monotonic as nm
from speechattn.functional.monotonic_attention import (
    KEY_GRAD_SINK,
    select_heads,
    stepwise_monotonic_attention,
)
from speechattn.nn import StepwiseMonotonicMultiheadAttention


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_layer_gradients_equal_the_dense_key_gradient_path(
    noise: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator().manual_seed(3)
    b, u, t, d = 3, 7, 25, 16
    text = torch.randn(b, u, d, generator=g, dtype=torch.float64)
    tl, ml = torch.tensor([7, 4, 2]), torch.tensor([25, 13, 9])
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(
        embed_dim=d, num_heads=4, noise_std=noise, initial_stay_prob=0.8, layer_norm=True
    ).double()
    layer.train()
    results = []
    for fast in (False, True):
        monkeypatch.setattr(nm, "FAST_KEY_GRAD", fast)
        mel = torch.randn(b, t, d, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        mel.requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = layer(text, mel, mel, query_lengths=tl, key_lengths=ml)
        (out.output.sum() + (out.alignment * torch.arange(t)).sum()).backward()
        assert mel.grad is not None
        results.append([mel.grad, *(p.grad for p in layer.parameters() if p.grad is not None)])
    for a, c in zip(*results, strict=True):
        assert torch.equal(a, c)


def test_key_gradient_sink_adds_another_consumers_gradient() -> None:
    """When the key also gets gradient from elsewhere (in the selected heads), the projection
    adds the deposited rows to it: the gradients of plain autograd through ``F.linear``."""
    g = torch.Generator().manual_seed(5)
    b, u, t, d, h = 2, 5, 14, 8, 2
    q = torch.randn(b, h, u, d // h, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, t, d // h, generator=g, dtype=torch.float64)
    x = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, d, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(d, generator=g, dtype=torch.float64, requires_grad=True)
    ql, kl = torch.tensor([5, 3]), torch.tensor([14, 10])
    grads = []
    for mode in ("autograd", "dense", "sink"):
        hint = nm._HeadHint()
        if mode == "autograd":
            k = torch.nn.functional.linear(x, w, bias)
        else:
            k = nm._HeadBlockLinear.apply(x, w, bias, h, hint, kl)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        if mode == "sink":
            setattr(k, KEY_GRAD_SINK, hint)
        res = stepwise_monotonic_attention(q, k, v, query_lengths=ql, key_lengths=kl)
        hint.head_index = res.head_index
        valid = (torch.arange(t)[None] < kl[:, None])[..., None]
        other = torch.where(valid, select_heads(k, res.head_index), 0).pow(2).sum()
        grads.append(torch.autograd.grad(res.context.sum() + other, [w, bias]))
        assert hint.grad_rows is None  # consumed
    for got in grads[1:]:
        for a, c in zip(got, grads[0], strict=True):
            torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
