"""prior_attention(impl="varlen"): per-item explicit attention with a hand-written backward.

Compared with the float64 loop oracle (``tests/reference/priors_reference.attention_ref``),
gradchecked in float64, and checked against the SDPA path in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import speechattn.kernels._varlen_attention as va
from reference.priors_reference import attention_ref
from speechattn.functional import diagonal_bias, prior_attention


def _t(x: list[int]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.int64)


CASES = [  # (query_lengths, key_lengths, Tq, Tk): square, non-square, ragged, zero-length items
    ([4, 4], [4, 4], 4, 4),
    ([3, 2], [6, 4], 3, 6),
    ([5, 1, 3], [2, 4, 0], 5, 4),
    ([5, 0, 3], [2, 4, 4], 5, 4),
]
BIAS_SHAPES = ["BH", "11", "B1", "1H", None]


MODES = ["default", "per_head", "recompute"]


def _set_mode(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default blocking, one head per block, or P recomputed in the backward."""
    if mode == "per_head":
        monkeypatch.setattr(va, "SCORE_BLOCK_BYTES", 1)
    if mode == "recompute":
        monkeypatch.setattr(va, "SAVE_P_MAX_BYTES", 0)


def _bias(shape: str | None, b: int, h: int, tq: int, tk: int, gen: torch.Generator):
    if shape is None:
        return None
    dims = (b if shape[0] == "B" else 1, h if shape[1] == "H" else 1, tq, tk)
    return torch.randn(*dims, dtype=torch.float64, generator=gen)


def _qkv(b: int, h: int, tq: int, tk: int, gen: torch.Generator, dtype=torch.float64):
    q = torch.randn(b, h, tq, 3, dtype=dtype, generator=gen)
    k = torch.randn(b, h, tk, 3, dtype=dtype, generator=gen)
    v = torch.randn(b, h, tk, 5, dtype=dtype, generator=gen)
    return q, k, v


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bshape", BIAS_SHAPES)
@pytest.mark.parametrize("mode", MODES[:2])
def test_varlen_matches_loop_oracle(case, causal, bshape, mode, monkeypatch) -> None:
    _set_mode(mode, monkeypatch)
    lq, lk, tq, tk = case
    b, h = len(lq), 2
    gen = torch.Generator().manual_seed(0)
    q, k, v = _qkv(b, h, tq, tk, gen)
    bias = _bias(bshape, b, h, tq, tk, gen)
    res = prior_attention(
        q, k, v, bias=bias, query_lengths=_t(lq), key_lengths=_t(lk), causal=causal, impl="varlen"
    )
    out_ref, _ = attention_ref(q, k, v, bias, lq, lk, causal)
    torch.testing.assert_close(res.output, out_ref)
    assert res.attn_weights is None


@pytest.mark.parametrize("case", CASES[1:])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("bshape", "mode"),
    [("BH", "default"), ("11", "default"), ("1H", "per_head"), ("B1", "recompute")],
)
def test_varlen_gradcheck(case, causal, bshape, mode, monkeypatch) -> None:
    _set_mode(mode, monkeypatch)
    lq, lk, tq, tk = case
    b, h = len(lq), 2
    gen = torch.Generator().manual_seed(1)
    q, k, v = _qkv(b, h, tq, tk, gen)
    bias = _bias(bshape, b, h, tq, tk, gen)
    args = tuple(t.requires_grad_(True) for t in (q, k, v, bias))  # type: ignore[union-attr]

    def fn(q, k, v, bias):
        return prior_attention(
            q,
            k,
            v,
            bias=bias,
            query_lengths=_t(lq),
            key_lengths=_t(lk),
            causal=causal,
            impl="varlen",
        ).output

    assert torch.autograd.gradcheck(fn, args)


def test_varlen_gradcheck_without_bias() -> None:
    gen = torch.Generator().manual_seed(2)
    q, k, v = (t.requires_grad_(True) for t in _qkv(2, 2, 3, 4, gen))

    def fn(q, k, v):
        return prior_attention(
            q, k, v, query_lengths=_t([3, 1]), key_lengths=_t([2, 4]), impl="varlen"
        ).output

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_varlen_ignores_padding_content_and_gives_it_zero_gradient() -> None:
    lq, lk, tq, tk = _t([5, 2, 0]), _t([3, 6, 4]), 5, 6
    gen = torch.Generator().manual_seed(3)
    q, k, v = _qkv(3, 2, tq, tk, gen, dtype=torch.float32)
    bias = diagonal_bias(lq, lk, kind="gaussian", max_query_len=tq, max_key_len=tk)
    bias = bias + 0.1 * torch.randn(bias.shape, generator=gen)  # not a masked bias
    row_pad = ~(torch.arange(tq)[None, :] < lq[:, None])  # (B, Tq)
    key_pad = ~(torch.arange(tk)[None, :] < lk[:, None])  # (B, Tk)
    nan = float("nan")
    dirty = [
        q.masked_fill(row_pad[:, None, :, None], nan),
        k.masked_fill(key_pad[:, None, :, None], nan),
        v.masked_fill(key_pad[:, None, :, None], nan),
        bias.masked_fill(row_pad[:, None, :, None] | key_pad[:, None, None, :], nan),
    ]
    outs, grads = [], []
    for tensors in ((q, k, v, bias), dirty):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        out = prior_attention(
            *leaves[:3], bias=leaves[3], query_lengths=lq, key_lengths=lk, impl="varlen"
        ).output
        out.square().sum().backward()
        outs.append(out)
        grads.append([t.grad for t in leaves])
    assert torch.isfinite(outs[1]).all()
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert (outs[1][row_pad[:, None, :, None].expand_as(outs[1])] == 0).all()
    for g0, g1 in zip(grads[0], grads[1]):
        torch.testing.assert_close(g0, g1, rtol=0, atol=0)
    gq, gk, gv, gb = grads[1]
    assert (gq[row_pad[:, None, :, None].expand_as(gq)] == 0).all()
    assert (gk[key_pad[:, None, :, None].expand_as(gk)] == 0).all()
    assert (gv[key_pad[:, None, :, None].expand_as(gv)] == 0).all()
    bias_pad = (row_pad[:, None, :, None] | key_pad[:, None, None, :]).expand_as(gb)
    assert (gb[bias_pad] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_equals_sdpa_path_in_float32(causal) -> None:
    """Forward and all gradients (q, k, v, learnable slopes) agree with the SDPA path."""
    gen = torch.Generator().manual_seed(4)
    b, h, tq, tk, d = 4, 3, 9, 23, 8
    lq, lk = _t([9, 4, 7, 1]), _t([23, 11, 5, 17])
    base = [
        torch.randn(b, h, tq, d, generator=gen),
        torch.randn(b, h, tk, d, generator=gen),
        torch.randn(b, h, tk, d, generator=gen),
    ]
    results = []
    for impl in ("sdpa", "varlen"):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        slopes = torch.tensor([1.0, 0.5, 2.0], requires_grad=True)
        bias = diagonal_bias(lq, lk, kind="linear", scale=3.0, slopes=slopes)
        out = prior_attention(
            q, k, v, bias=bias, query_lengths=lq, key_lengths=lk, causal=causal, impl=impl
        ).output
        (out * torch.linspace(-1, 1, d)).sum().backward()
        results.append((out, q.grad, k.grad, v.grad, slopes.grad))
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_varlen_float32_error_is_within_a_few_times_the_sdpa_error() -> None:
    gen = torch.Generator().manual_seed(5)
    b, h, tq, tk, d = 3, 2, 12, 40, 16
    lq, lk = [12, 7, 9], [40, 25, 31]
    q, k, v = (
        torch.randn(b, h, tq, d, dtype=torch.float64, generator=gen),
        torch.randn(b, h, tk, d, dtype=torch.float64, generator=gen),
        torch.randn(b, h, tk, d, dtype=torch.float64, generator=gen),
    )
    bias = diagonal_bias(_t(lq), _t(lk), kind="gaussian", sigma=0.2, dtype=torch.float64)
    gold, _ = attention_ref(q, k, v, bias, lq, lk, False)
    errs = {}
    for impl in ("sdpa", "varlen"):
        out = prior_attention(
            q.float(),
            k.float(),
            v.float(),
            bias=bias.float(),
            query_lengths=_t(lq),
            key_lengths=_t(lk),
            impl=impl,
        ).output
        errs[impl] = float((out.double() - gold).abs().max())
    assert errs["varlen"] <= 4 * errs["sdpa"] + 1e-7, errs


def test_varlen_second_backward_with_retained_graph_recomputes_the_same() -> None:
    gen = torch.Generator().manual_seed(6)
    q, k, v = (t.requires_grad_(True) for t in _qkv(2, 2, 4, 5, gen))
    bias = torch.randn(2, 1, 4, 5, dtype=torch.float64, generator=gen)
    out = prior_attention(
        q, k, v, bias=bias, query_lengths=_t([4, 2]), key_lengths=_t([5, 3]), impl="varlen"
    ).output
    (g1,) = torch.autograd.grad(out.sum(), q, retain_graph=True)
    (g2,) = torch.autograd.grad(out.sum(), q)  # saved P was released: recomputed
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-15)


def test_varlen_accepts_head_transposed_inputs() -> None:
    """The modules pass (B, T, H, D).transpose(1, 2) views; no copy is needed."""
    gen = torch.Generator().manual_seed(7)
    b, h, t, d = 2, 4, 6, 5
    x = torch.randn(b, t, h, d, dtype=torch.float64, generator=gen)
    q = k = v = x.transpose(1, 2)
    lens = _t([6, 3])
    out = prior_attention(q, k, v, query_lengths=lens, key_lengths=lens, impl="varlen").output
    ref, _ = attention_ref(q, k, v, None, [6, 3], [6, 3], False)
    torch.testing.assert_close(out, ref)


def test_auto_picks_varlen_on_one_cpu_thread_for_large_items(monkeypatch) -> None:
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    gen = torch.Generator().manual_seed(8)
    b, h, tq, tk, d = 2, 4, 64, 96, 8  # h * tq * tk = 24576 >= the auto threshold
    q, k, v = (torch.randn(b, h, n, d, generator=gen) for n in (tq, tk, tk))
    lq, lk = _t([64, 30]), _t([96, 50])
    bias = diagonal_bias(lq, lk)
    kw = dict(bias=bias, query_lengths=lq, key_lengths=lk)
    auto = prior_attention(q, k, v, **kw).output
    varlen = prior_attention(q, k, v, impl="varlen", **kw).output
    torch.testing.assert_close(auto, varlen, rtol=0, atol=0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    sdpa = prior_attention(q, k, v, impl="sdpa", **kw).output
    torch.testing.assert_close(prior_attention(q, k, v, **kw).output, sdpa, rtol=0, atol=0)
    with_w = prior_attention(q, k, v, need_weights=True, **kw)
    assert with_w.attn_weights is not None
    torch.testing.assert_close(with_w.output, auto, rtol=1e-5, atol=1e-6)


def test_varlen_errors_name_the_fix() -> None:
    q = torch.randn(2, 2, 3, 4)
    with pytest.raises(ValueError, match="impl in"):
        prior_attention(q, q, q, impl="flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"need_weights=False.*impl=.sdpa."):
        prior_attention(q, q, q, impl="varlen", need_weights=True)
    with pytest.raises(ValueError, match=r"dropout_p=0\.5"):
        prior_attention(q, q, q, impl="varlen", dropout_p=0.5)
    with pytest.raises(ValueError, match=r"dtype=torch\.bfloat16"):
        h = q.bfloat16()
        prior_attention(h, h, h, impl="varlen")


@settings(max_examples=20, deadline=None)
@given(
    lens=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 7)), min_size=1, max_size=4),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_varlen_item_does_not_depend_on_the_batch(lens, causal, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    lq, lk = [a for a, _ in lens], [c for _, c in lens]
    tq, tk = max([*lq, 1]), max([*lk, 1])
    b = len(lens)
    q, k, v = _qkv(b, 2, tq, tk, gen)
    bias = diagonal_bias(_t(lq), _t(lk), max_query_len=tq, max_key_len=tk, dtype=torch.float64)
    out = prior_attention(
        q, k, v, bias=bias, query_lengths=_t(lq), key_lengths=_t(lk), causal=causal, impl="varlen"
    ).output
    assert torch.isfinite(out).all()
    for i in range(b):
        one = prior_attention(
            q[i : i + 1],
            k[i : i + 1],
            v[i : i + 1],
            bias=bias[i : i + 1],
            query_lengths=_t(lq[i : i + 1]),
            key_lengths=_t(lk[i : i + 1]),
            causal=causal,
            impl="varlen",
        ).output
        torch.testing.assert_close(out[i : i + 1], one, rtol=0, atol=0)
        if lk[i] > 0 and lq[i] > 0:  # a valid row is a convex combination of valid values
            vmax = v[i, :, : lk[i]].abs().max()
            assert out[i, :, : lq[i]].abs().max() <= vmax * (1 + 1e-12) + 1e-12
    assert not math.isnan(float(out.sum()))
