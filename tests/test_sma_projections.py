"""The SMA layer's training step: the value and output projections as one product
(``_ChainedLinear``), the query projection's selected-head gradient hand-off, and the selected
head's energies copied from the heads' ranking instead of recomputed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import speechattn.functional.monotonic_attention as fm
import speechattn.nn.monotonic as nm
from speechattn.nn import StepwiseMonotonicMultiheadAttention


def _two_linears(
    x: torch.Tensor,
    rows: torch.Tensor | None,
    w_v: torch.Tensor,
    b_v: torch.Tensor | None,
    w_o: torch.Tensor,
    b_o: torch.Tensor | None,
) -> torch.Tensor:
    y = F.linear(x, w_v)
    if rows is not None and b_v is not None:
        y = y + rows * b_v
    return F.linear(y, w_o, b_o)


@pytest.mark.parametrize("bias", [True, False])
def test_chained_linear_equals_two_linears_forward_and_gradients(bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    kw = dict(generator=g, dtype=torch.float64)
    x = torch.randn(3, 11, 6, **kw).requires_grad_(True)
    rows = torch.rand(3, 11, 1, **kw).requires_grad_(True) if bias else None
    w_v = torch.randn(5, 6, **kw).requires_grad_(True)
    w_o = torch.randn(4, 5, **kw).requires_grad_(True)
    b_v = torch.randn(5, **kw).requires_grad_(True) if bias else None
    b_o = torch.randn(4, **kw).requires_grad_(True) if bias else None
    args = (x, rows, w_v, b_v, w_o, b_o)
    leaves = [a for a in args if a is not None]
    gout = torch.randn(3, 11, 4, **kw)
    want = _two_linears(*args)
    got = nm._ChainedLinear.apply(*args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_want = torch.autograd.grad(want, leaves, gout)
    g_got = torch.autograd.grad(got, leaves, gout)
    for a, c in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: nm._ChainedLinear.apply(*a), args)


def test_chained_linear_gradients_only_where_needed() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 4, generator=g).requires_grad_(True)
    rows = torch.rand(2, 9, 1, generator=g)
    w_v, w_o = torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g)
    b_v = torch.randn(4, generator=g).requires_grad_(True)
    out = nm._ChainedLinear.apply(x, rows, w_v, b_v, w_o, None)
    gx, gb = torch.autograd.grad(out.sum(), [x, b_v])
    want = _two_linears(x, rows, w_v, b_v, w_o, None)
    wx, wb = torch.autograd.grad(want.sum(), [x, b_v])
    torch.testing.assert_close(gx, wx)
    torch.testing.assert_close(gb, wb)


def _layer_grads(
    monkeypatch: pytest.MonkeyPatch,
    switches: dict[str, bool],
    dtype: torch.dtype,
    noise: float,
    nan_padding: bool = False,
) -> list[torch.Tensor]:
    for name, value in switches.items():
        monkeypatch.setattr(nm if hasattr(nm, name) else fm, name, value)
    g = torch.Generator().manual_seed(7)
    b, u, t, d = 3, 12, 30, 16
    text = torch.randn(b, u, d, generator=g, dtype=dtype)
    mel = torch.randn(b, t, d, generator=g, dtype=dtype)
    tl, ml = torch.tensor([12, 8, 5]), torch.tensor([30, 21, 14])
    if nan_padding:
        text[1, 8:] = float("nan")
        mel[2, 14:] = float("nan")
    text.requires_grad_(True)
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(
        embed_dim=d, num_heads=4, noise_std=noise, initial_stay_prob=0.8, layer_norm=True
    ).to(dtype)
    layer.train()
    torch.manual_seed(1)
    out = layer(text, mel, mel, query_lengths=tl, key_lengths=ml, need_weights=False)
    w = torch.linspace(0.5, 1.5, d, dtype=dtype)
    loss = (out.output * w).sum() + (out.alignment * torch.arange(t, dtype=dtype)).sum()
    params = [p for p in layer.parameters()]
    grads = torch.autograd.grad(loss, [text, *params])
    return [out.output, out.alignment, out.focus_rate, *grads]


SWITCHES = ("FAST_CHAINED_PROJ", "FAST_QUERY_GRAD", "REUSE_RANKING_ENERGIES")


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_layer_fast_projections_equal_plain_autograd_float64(
    noise: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switches on vs off: outputs and every gradient (input, all parameters) agree in
    float64 (summation order only); each switch alone too."""
    off = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, False), torch.float64, noise)
    for on in [{name: True} for name in SWITCHES] + [dict.fromkeys(SWITCHES, True)]:
        switches = {**dict.fromkeys(SWITCHES, False), **on}
        got = _layer_grads(monkeypatch, switches, torch.float64, noise)
        for a, c in zip(got, off, strict=True):
            torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_layer_fast_projections_float32_within_float64_tolerance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """float32 with the fast projections is as close to the float64 result as float32 without
    them (at most 4x its error, plus a float32 rounding)."""
    ref = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, False), torch.float64, 0.0)
    plain = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, False), torch.float32, 0.0)
    fast = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, True), torch.float32, 0.0)
    for r, p, f in zip(ref, plain, fast, strict=True):
        err_plain = (p.double() - r).abs().max().item()
        err_fast = (f.double() - r).abs().max().item()
        scale = r.abs().max().item()
        assert err_fast <= 4 * err_plain + 1e-6 * scale, (err_fast, err_plain, scale)


def test_layer_fast_projections_ignore_padded_content(monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN in padded tokens and frames reaches no output and no gradient."""
    got = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, True), torch.float64, 0.5, True)
    for x in got:
        assert torch.isfinite(x).all()
    clean = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, True), torch.float64, 0.5)
    for a, c in zip(got, clean, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_chained_projection_only_for_enough_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few context rows (b * u < 2 * embed_dim): the two projections as before (bitwise)."""
    calls = []
    orig = nm._ChainedLinear.apply

    def spy(*a: object) -> object:
        calls.append(1)
        return orig(*a)

    monkeypatch.setattr(nm._ChainedLinear, "apply", spy)
    layer = StepwiseMonotonicMultiheadAttention(embed_dim=16, num_heads=4, dropout=0.0)
    layer(torch.randn(2, 5, 16), torch.randn(2, 9, 16), torch.randn(2, 9, 16))
    assert not calls
    layer(torch.randn(4, 8, 16), torch.randn(4, 9, 16), torch.randn(4, 9, 16))
    assert calls


@pytest.mark.parametrize("dense", [False, True])
def test_valid_context_alignment_gradient_at_two_threads(
    dense: bool, two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 2 threads the alignment's gradient may come from one dense ``bmm`` (padded cells
    overwritten): the same as autograd on the valid cells, exactly 0 elsewhere, with NaN in the
    padded value rows and in the incoming gradient's padded token rows."""
    monkeypatch.setattr(fm, "DENSE_CONTEXT_GRAD", dense)
    g = torch.Generator().manual_seed(12)
    b, u, t, dv = 3, 5, 9, 4
    ql, kl = [5, 2, 4], [9, 6, 3]
    cell = (torch.arange(u)[None, :, None] < torch.tensor(ql)[:, None, None]) & (
        torch.arange(t)[None, None, :] < torch.tensor(kl)[:, None, None]
    )
    frm = torch.arange(t)[None, :, None] < torch.tensor(kl)[:, None, None]
    tok = torch.arange(u)[None, :, None] < torch.tensor(ql)[:, None, None]
    a = torch.where(cell, torch.rand(b, u, t, generator=g, dtype=torch.float64), 0)
    v = torch.randn(b, t, dv, generator=g, dtype=torch.float64)
    w = torch.randn(b, u, dv, generator=g, dtype=torch.float64)
    a1 = a.clone().requires_grad_(True)
    ga_ref = torch.autograd.grad((torch.bmm(a1, torch.where(frm, v, 0)) * w).sum(), a1)[0]
    a2 = a.clone().requires_grad_(True)
    ours = fm._ValidContext.apply(a2, torch.where(frm, v, float("nan")), ql, kl)
    ga = torch.autograd.grad(ours, a2, torch.where(tok, w, float("nan")))[0]
    torch.testing.assert_close(ga, torch.where(cell, ga_ref, 0), rtol=1e-13, atol=1e-14)
    assert torch.all(ga[~cell] == 0)


@pytest.mark.parametrize("zeroed", [False, True])
def test_query_projection_modes_equal_plain_autograd(
    zeroed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query hand-off with padded rows zeroed then projected densely, or projected item by
    item over valid rows: the gradients of plain autograd (float64), and NaN in padded tokens
    reaches no gradient."""
    off = _layer_grads(monkeypatch, dict.fromkeys(SWITCHES, False), torch.float64, 0.5)
    on = {**dict.fromkeys(SWITCHES, True), "QUERY_ZEROED_ROWS": zeroed}
    got = _layer_grads(monkeypatch, on, torch.float64, 0.5)
    for a, c in zip(got, off, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    nan = _layer_grads(monkeypatch, on, torch.float64, 0.5, nan_padding=True)
    for a, c in zip(nan, got, strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
