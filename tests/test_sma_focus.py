"""Head ranking without stored alignments: the numba forward's focus-rate pass and the layer's
``need_weights`` switch."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("numba")

from speechattn.functional import focus_rate, stepwise_monotonic_alignment
from speechattn.functional.monotonic_attention import stepwise_monotonic_attention
from speechattn.kernels import _numba_sma, _omp
from speechattn.nn import StepwiseMonotonicMultiheadAttention


def _case(dtype: torch.dtype, seed: int = 0, n: int = 9, u: int = 23, t: int = 61):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, u, t, generator=g, dtype=dtype)
    tl = torch.randint(1, u + 1, (n,), generator=g)
    ml = torch.randint(1, t + 1, (n,), generator=g)
    tl[0], ml[0] = u, t  # one full item, one 1 x 1 item
    tl[1], ml[1] = 1, 1
    a0 = torch.rand(n, u, generator=g, dtype=dtype)
    return p, tl, ml, a0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preserve", [False, True])
def test_focus_pass_equals_focus_rate_of_the_float64_alignment(
    dtype: torch.dtype, preserve: bool
) -> None:
    """The focus rates accumulated in the forward pass equal ``focus_rate`` of the float64
    torch alignment; alpha is bitwise the plain forward's, and not storing it changes no rate."""
    p, tl, ml, a0 = _case(dtype)
    a0[:, 0] += 1.0
    alpha, ok = _numba_sma.forward_checked(p, a0, tl, ml, preserve)
    alpha_f, fr, ok_f = _numba_sma.forward_focus(p, a0, tl, ml, preserve, True)
    none, fr_nw, ok_nw = _numba_sma.forward_focus(p, a0, tl, ml, preserve, False)
    assert none is None and alpha_f is not None
    assert torch.equal(alpha_f, alpha) and torch.equal(fr_nw, fr)
    assert bool(ok.all()) and torch.equal(ok_f, ok) and torch.equal(ok_nw, ok)
    mass = "preserve" if preserve else "drop"
    ref = stepwise_monotonic_alignment(
        p.double(), tl, ml, mass=mass, initial_alignment=a0.double(), impl="torch"
    )
    expected = focus_rate(ref, tl, ml)
    assert fr.dtype == dtype and fr.shape == (p.shape[0],)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fr.double(), expected, rtol=tol, atol=tol)
    # a hand-checked case: one token takes every frame (focus rate 1)
    one = _numba_sma.forward_focus(p[:1, :1], a0[:1, :1] * 0 + 1, tl[:1] * 0 + 1, ml[:1], True)
    assert one[1].item() == pytest.approx(1.0)


def test_focus_pass_flags_bad_stay_probabilities() -> None:
    p, tl, ml, a0 = _case(torch.float32, seed=3)
    p[2, 0, 0] = math.nan
    p[4, tl[4] - 1, ml[4] - 1] = 1.5
    p[5, -1, -1] = math.nan  # padding when item 5 is ragged: ignored there
    _, _, ok = _numba_sma.forward_focus(p, a0, tl, ml, True, False)
    assert not ok[2] and not ok[4]
    ragged = bool(tl[5] < p.shape[1] or ml[5] < p.shape[2])
    assert bool(ok[5]) == ragged
    assert bool(ok[0]) and bool(ok[1])


@pytest.mark.parametrize("preserve", [False, True])
def test_focus_pass_on_team_python_threads_and_serial_is_bitwise_equal(
    two_threads: None, preserve: bool
) -> None:
    p, tl, ml, a0 = _case(torch.float32, seed=5, n=13)
    torch.set_num_threads(1)
    ref = _numba_sma.forward_focus(p, a0, tl, ml, preserve, True)
    torch.set_num_threads(2)
    for mode in ("auto", "python"):
        _omp.set_mode(mode)
        for need_alpha in (True, False):
            got = _numba_sma.forward_focus(p, a0, tl, ml, preserve, need_alpha)
            assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
            if need_alpha:
                assert got[0] is not None and ref[0] is not None
                assert torch.equal(got[0], ref[0])


CONFIGS = [
    dict(tunable=True, head_selection="focus_rate"),
    dict(tunable=True, head_selection="per_head"),
    dict(tunable=False),
]


def _layer_batch(dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(7)
    b, u, t, d = 4, 9, 40, 16
    text = torch.randn(b, u, d, generator=g, dtype=dtype)
    mel = torch.randn(b, t, d, generator=g, dtype=dtype)
    tl, ml = torch.tensor([9, 4, 7, 1]), torch.tensor([40, 22, 31, 5])
    return text, mel, tl, ml


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("impl", ["numba", "torch"])
def test_need_weights_false_changes_nothing_but_the_weights(
    cfg: dict, training: bool, impl: str
) -> None:
    """``need_weights=False``: ``attn_weights`` is None and every other output and every
    gradient is bitwise the default call's (noise and dropout from the same seeds)."""
    text, mel, tl, ml = _layer_batch()
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(
        embed_dim=16, num_heads=4, initial_stay_prob=0.8, layer_norm=True, impl=impl, **cfg
    )
    layer.train(training)
    modes = ["soft"] if training or not cfg.get("tunable") else ["soft", "hard", "viterbi"]
    for mode in modes:
        results = []
        for need in (True, False):
            layer.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            out = layer(
                text, mel, mel, query_lengths=tl, key_lengths=ml, mode=mode, need_weights=need
            )
            assert (out.attn_weights is None) == (not need)
            loss = out.output.sum() + (out.alignment * torch.arange(40)).sum()
            loss.backward()
            grads = [p.grad for p in layer.parameters() if p.grad is not None]
            kept = [x for x in out if x is not None and x is not out.attn_weights]
            results.append([x.detach() for x in kept] + grads)
        assert len(results[0]) == len(results[1])
        for a, b in zip(*results, strict=True):
            assert torch.equal(a, b)


def test_need_weights_false_ranks_heads_like_the_stored_alignments() -> None:
    """The heads' focus rates without stored alignments match ``focus_rate`` of the returned
    per-head weights (float64), and the same head is picked."""
    g = torch.Generator().manual_seed(2)
    b, h, u, t, dk = 3, 4, 7, 30, 8
    q = torch.randn(b, h, u, dk, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, t, dk, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, t, dk, generator=g, dtype=torch.float64)
    ql, kl = torch.tensor([7, 5, 2]), torch.tensor([30, 18, 9])
    kw = dict(query_lengths=ql, key_lengths=kl, stay_bias=torch.linspace(-1, 2, h))
    full = stepwise_monotonic_attention(q, k, v, **kw)  # type: ignore[arg-type]
    lean = stepwise_monotonic_attention(q, k, v, need_weights=False, **kw)  # type: ignore[arg-type]
    assert lean.attn_weights is None and full.attn_weights is not None
    torch.testing.assert_close(lean.focus_rate, focus_rate(full.attn_weights, ql, kl))
    torch.testing.assert_close(lean.focus_rate, full.focus_rate, rtol=1e-12, atol=1e-12)
    assert torch.equal(lean.head_index, full.head_index)
    assert torch.equal(lean.context, full.context) and torch.equal(lean.alignment, full.alignment)


def test_need_weights_false_keeps_the_range_error_and_type_check() -> None:
    text, mel, tl, ml = _layer_batch()
    layer = StepwiseMonotonicMultiheadAttention(embed_dim=16, num_heads=4)
    bad = text.clone()
    bad[1, 2, 3] = math.nan  # a valid token
    errors = []
    for need in (True, False):
        with pytest.raises(ValueError, match="NaN") as info:
            layer(bad, mel, mel, query_lengths=tl, key_lengths=ml, need_weights=need)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    with pytest.raises(TypeError, match="need_weights"):
        layer(text, mel, mel, need_weights="no")  # type: ignore[arg-type]


def test_ranking_workspace_changes_no_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU ranking energies' reused buffer: calls of growing, shrinking and other-dtype
    shapes give bitwise the fresh-tensor results, and no output shares the buffer's memory."""
    import speechattn.functional.monotonic_attention as fm

    shapes = [(2, 5, 20), (3, 9, 40), (1, 4, 11), (3, 9, 40)]
    for dtype in (torch.float32, torch.float64, torch.float32):
        for b, u, t in shapes:
            g = torch.Generator().manual_seed(b * 100 + t)
            q = torch.randn(b, 4, u, 8, generator=g, dtype=dtype)
            k = torch.randn(b, 4, t, 8, generator=g, dtype=dtype)
            ql = torch.randint(1, u + 1, (b,), generator=g)
            kl = torch.randint(1, t + 1, (b,), generator=g)
            outs = []
            for reuse in (False, True):
                monkeypatch.setattr(fm, "RANKING_WORKSPACE", reuse)
                for need in (True, False):
                    res = stepwise_monotonic_attention(
                        q, k, k, query_lengths=ql, key_lengths=kl, need_weights=need
                    )
                    outs.append([x for x in res if x is not None])
            buf = fm._WORKSPACE.buf
            for res_list in outs:
                for x in res_list:
                    assert x.untyped_storage().data_ptr() != buf.untyped_storage().data_ptr()
            for x, y in zip(outs[0], outs[2], strict=True):
                assert torch.equal(x, y)
            for x, y in zip(outs[1], outs[3], strict=True):
                assert torch.equal(x, y)


def test_ranking_workspace_across_inference_mode_and_training() -> None:
    """A first call under ``torch.inference_mode`` then training steps (the kept buffer is
    written in place by both)."""
    import speechattn.functional.monotonic_attention as fm

    fm._WORKSPACE.buf = None
    text, mel, tl, ml = _layer_batch()
    layer = StepwiseMonotonicMultiheadAttention(embed_dim=16, num_heads=4, layer_norm=True)
    layer.eval()
    with torch.inference_mode():
        ref = layer(text, mel, mel, query_lengths=tl, key_lengths=ml).output
    layer.train()
    out = layer(text, mel, mel, query_lengths=tl, key_lengths=ml, need_weights=False)
    out.output.sum().backward()
    layer.eval()
    with torch.no_grad():
        again = layer(text, mel, mel, query_lengths=tl, key_lengths=ml).output
    assert torch.equal(again, ref)
