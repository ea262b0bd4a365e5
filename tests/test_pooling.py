"""Pooling family: WeSpeaker equality, strict state dicts, lengths, gradients, errors."""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import wespeaker_pooling_reference as ref
from speechattn.functional.pooling import (
    attentive_mean_std,
    attentive_mean_var,
    head_attentive_statistics,
    masked_batch_norm,
    masked_softmax,
    temporal_mean_std,
)
from speechattn.kernels import _tiled_pool as tp
from speechattn.nn import pooling as ours

# (class name, positional args, keyword args) at in_dim = 48 (divisible by 2, 4, 8, 16).
CASES = [
    ("TAP", (48,), {}),
    ("TSDP", (48,), {}),
    ("TSTP", (48,), {}),
    ("ASTP", (48,), {}),
    ("ASTP", (48,), {"bottleneck_dim": 16, "global_context_att": True}),
    ("MHASTP", (48,), {}),
    ("MHASTP", (48,), {"d_s": 4, "head_num": 4, "layer_num": 3, "bottleneck_dim": 8}),
    ("MHASTP", (48,), {"layer_num": 1}),
    ("MQMHASTP", (48,), {}),
    ("MQMHASTP", (48,), {"d_s": 1, "query_num": 3, "head_num": 4}),
    ("MQMHASTP", (48,), {"layer_num": 1, "head_num": 16}),
    ("ASP", (3, 16), {}),  # D = 3 * 8 * 2 = 48
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, _, kw in CASES]


def _pair(
    name: str, args: tuple, kw: dict, seed: int = 0
) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    r = getattr(ref, name)(*args, **kw)
    # Non-default values everywhere (BatchNorm affine/running stats included).
    with torch.no_grad():
        for p in r.parameters():
            p.uniform_(-0.5, 0.5)
        for n, b in r.named_buffers():
            if "running_var" in n:
                b.uniform_(0.5, 2.0)
            elif "running_mean" in n:
                b.uniform_(-0.3, 0.3)
    o = getattr(ours, name)(*args, **kw)
    o.load_state_dict(r.state_dict(), strict=True)
    return r, o


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
@pytest.mark.parametrize("four_d", [False, True])
def test_equals_wespeaker_without_lengths(name: str, args: tuple, kw: dict, four_d: bool) -> None:
    """The issue's criterion: default-initialised layers, fp32, equal to WeSpeaker to 1e-6."""
    torch.manual_seed(3)
    r = getattr(ref, name)(*args, **kw).eval()
    o = getattr(ours, name)(*args, **kw).eval()
    o.load_state_dict(r.state_dict(), strict=True)
    x = torch.randn(4, 48, 23)
    if four_d:
        x = x.reshape(4, 6, 8, 23)
    want = r(x)
    got = o(x)
    assert got.shape == want.shape
    assert got.shape[1] == o.get_out_dim()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
def test_peaked_attention_at_least_as_accurate_as_wespeaker(
    name: str, args: tuple, kw: dict
) -> None:
    """Large random weights (peaked attention) and an offset: WeSpeaker's fp32 m2 - mean^2
    cancels; ours (centred) must be as close to the float64 truth, and within 1e-5 of it."""
    r, o = _pair(name, args, kw)
    r.eval()
    o.eval()
    x = torch.randn(4, 48, 23) * 2 + 0.5
    truth = copy.deepcopy(r).double()(x.double())
    err_ours = (o(x).double() - truth).abs().max().item()
    err_ref = (r(x).double() - truth).abs().max().item()
    assert err_ours <= 2 * max(err_ref, 1e-6)
    assert err_ours < 1e-5


@pytest.mark.parametrize("name", ["ASTP", "MHASTP", "MQMHASTP", "ASP"])
def test_large_offset_no_cancellation(name: str) -> None:
    """Features around 100 with unit spread: m2 - mean^2 loses the std in fp32; centred does not."""
    args, kw = next((a, k) for n, a, k in CASES if n == name)
    r, o = _pair(name, args, kw)
    r.eval()
    o.eval()
    x = torch.randn(4, 48, 23) + 100.0
    truth = copy.deepcopy(r).double()(x.double())
    err_ours = (o(x).double() - truth).abs().max().item()
    err_ref = (r(x).double() - truth).abs().max().item()
    assert err_ours < 1e-4 < err_ref


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
def test_gradients_equal_wespeaker_float64(name: str, args: tuple, kw: dict) -> None:
    r, o = _pair(name, args, kw)
    r.double().train()
    o.double().train()
    x = torch.randn(3, 48, 9, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    xo = x.clone().requires_grad_(True)
    g = torch.randn(3, o.get_out_dim(), dtype=torch.float64)
    (r(xr) * g).sum().backward()
    (o(xo) * g).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, atol=1e-10, rtol=1e-9)
    pr = dict(r.named_parameters())
    for n, p in o.named_parameters():
        torch.testing.assert_close(p.grad, pr[n].grad, atol=1e-10, rtol=1e-9, msg=n)
    if name == "ASP":  # running statistics updated the same way
        for (n, b), (_, c) in zip(o.named_buffers(), r.named_buffers()):
            torch.testing.assert_close(b, c, msg=n)


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
def test_state_dict_round_trip_strict(name: str, args: tuple, kw: dict) -> None:
    r, o = _pair(name, args, kw)
    assert list(o.state_dict()) == list(r.state_dict())
    for k, v in o.state_dict().items():
        assert v.shape == r.state_dict()[k].shape, k
    back = getattr(ref, name)(*args, **kw)
    back.load_state_dict(o.state_dict(), strict=True)


def test_wespeaker_names_defaults_and_ordering() -> None:
    m = ours.MQMHASTP(64)
    assert (m.query_num, m.head_num, m.layer_num, m.n_query[0].d_s) == (2, 8, 2, 8)
    w = m.state_dict()["n_query.1.heads_att_trans.7.att_0.weight"]
    assert w.shape == (64, 8, 1)
    assert m.state_dict()["n_query.0.heads_att_trans.0.att_1.weight"].shape == (8, 64, 1)
    h = ours.MHASTP(64)
    assert (h.head_num, h.layer_num, h.d_s) == (2, 2, 1)
    assert ours.ASTP(10).linear1.out_channels == 128
    # Ordering: a head whose channels are constant over time has std = sqrt(1e-7) exactly where
    # WeSpeaker puts that head's std block: query q, head h, [mean, std].
    m = ours.MQMHASTP(8, head_num=4, query_num=2)
    x = torch.randn(1, 8, 5)
    x[:, 2:4] = 3.0  # head 1 (channels 2, 3) constant
    out = m(x).view(2, 4, 2, 2)  # (query, head, [mean, std], c)
    for q in range(2):
        torch.testing.assert_close(out[q, 1, 0], torch.full((2,), 3.0))
        torch.testing.assert_close(out[q, 1, 1], torch.full((2,), math.sqrt(1e-7)))
        assert (out[q, [0, 2, 3], 1] > 1e-2).all()


def _layers_for_lengths() -> list[tuple[str, tuple, dict]]:
    return CASES


@settings(max_examples=12, deadline=None)
@given(
    case=st.sampled_from(range(len(CASES))),
    lengths=st.lists(st.integers(1, 13), min_size=1, max_size=4),
    pad_kind=st.sampled_from(["random", "huge", "nan", "inf"]),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_padding_invariance(
    case: int, lengths: list[int], pad_kind: str, extra: int, seed: int
) -> None:
    name, args, kw = CASES[case]
    _, o = _pair(name, args, kw, seed=seed % 7)
    o.eval()
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + extra
    items = [torch.randn(48, n, generator=g) for n in lengths]
    x = {
        "random": torch.randn(len(lengths), 48, T, generator=g),
        "huge": torch.full((len(lengths), 48, T), 1e30),
        "nan": torch.full((len(lengths), 48, T), float("nan")),
        "inf": torch.full((len(lengths), 48, T), float("-inf")),
    }[pad_kind]
    for b, it in enumerate(items):
        x[b, :, : it.shape[1]] = it
    out = o(x, torch.tensor(lengths))
    assert torch.isfinite(out).all()
    for b, it in enumerate(items):
        alone = o(it.unsqueeze(0))
        torch.testing.assert_close(out[b : b + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
def test_padding_content_never_reaches_gradients(name: str, args: tuple, kw: dict) -> None:
    _, o = _pair(name, args, kw)
    o.train()
    x = torch.randn(3, 48, 10)
    x[0, :, 6:] = float("nan")
    x[2, :, 3:] = 1e30
    x.requires_grad_(True)
    out = o(x, torch.tensor([6, 10, 3]))
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[0, :, 6:] == 0).all() and (x.grad[2, :, 3:] == 0).all()
    for n, p in o.named_parameters():
        assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize(("name", "args", "kw"), CASES, ids=IDS)
def test_single_frame_is_finite(name: str, args: tuple, kw: dict) -> None:
    _, o = _pair(name, args, kw)
    o.eval()
    x = torch.randn(2, 48, 1, requires_grad=True)
    out = o(x)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    out2 = o(torch.randn(2, 48, 5), torch.tensor([1, 5]))
    assert torch.isfinite(out2).all()
    if name in ("TSDP", "TSTP"):
        std = out[:, -48:]
        torch.testing.assert_close(std, torch.full_like(std, math.sqrt(1e-7)))


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    scale=st.floats(0.1, 1e4),
    seed=st.integers(0, 2**16),
)
def test_masked_softmax_weights_sum_to_one(lengths: list[int], scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    T = max(lengths) + 2
    scores = torch.randn(len(lengths), 3, T, generator=g) * scale
    mask = (torch.arange(T) < torch.tensor(lengths)[:, None]).unsqueeze(1)
    a = masked_softmax(scores.half(), mask)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a.sum(-1), torch.ones(len(lengths), 3))
    assert (a.masked_select(~mask.expand_as(a)) == 0).all()


def test_attention_weights_inside_layer_sum_to_one() -> None:
    """Spy on the weights the layer actually uses (a folded tile (H, Q, S, b, T)) and check them."""
    seen: list[torch.Tensor] = []
    orig = tp._tile_alpha

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = orig(*args, **kwargs)
        seen.append(out.detach().clone())
        return out

    tp._tile_alpha = spy  # type: ignore[assignment]
    try:
        m = ours.MQMHASTP(48, head_num=4)
        with torch.no_grad():
            m(torch.randn(2, 48, 7), torch.tensor([7, 4]))
    finally:
        tp._tile_alpha = orig  # type: ignore[assignment]
    assert len(seen) == 1  # one batch tile: every head and query at once
    for alpha in seen:  # (H, Q, S = c = 12, b, T)
        assert alpha.shape == (4, 2, 12, 2, 7)
        torch.testing.assert_close(alpha.sum(-1), torch.ones(alpha.shape[:-1]))
        assert (alpha[..., 1, 4:] == 0).all()
        assert (alpha[..., 1, :4] > 0).all()


@pytest.mark.parametrize("impl", ["fused", "torch"])
@pytest.mark.parametrize(
    ("s_full", "shared"), [(False, False), (True, False), (True, True), (False, True)]
)
def test_head_attentive_statistics_gradcheck(impl: str, s_full: bool, shared: bool) -> None:
    g = torch.Generator().manual_seed(0)
    heads, queries, c, k, frames = 2, 2, 3, 4 if not shared else 3, 5
    s = c if s_full else 1
    d = dict(dtype=torch.float64)
    hidden = torch.randn(2, heads * (1 if shared else queries) * k, frames, generator=g, **d)
    weight = torch.randn(heads, queries, s, k, generator=g, **d)
    bias = torch.randn(heads, queries, s, generator=g, **d)
    x = torch.randn(2, heads * c, frames, generator=g, **d)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]]).unsqueeze(1)
    x = x * mask
    if shared:
        hidden = x.clone()
    args = [t.requires_grad_(True) for t in (hidden, weight, bias, x)]

    def fn(h, w, b, xx):  # type: ignore[no-untyped-def]
        return head_attentive_statistics(h, w, b, xx, mask, shared_hidden=shared, impl=impl)

    assert torch.autograd.gradcheck(fn, tuple(args))
    # fused and plain agree on values and gradients
    other = "torch" if impl == "fused" else "fused"
    out1 = fn(*args)
    out2 = head_attentive_statistics(*args, mask, shared_hidden=shared, impl=other)
    for a, b in zip(out1, out2):
        torch.testing.assert_close(a, b)
    cot = [torch.randn_like(o) for o in out1]
    grads1 = torch.autograd.grad(sum((o * c_).sum() for o, c_ in zip(out1, cot)), args)
    grads2 = torch.autograd.grad(sum((o * c_).sum() for o, c_ in zip(out2, cot)), args)
    for a, b in zip(grads1, grads2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("s_full", [False, True])
def test_attentive_mean_var_gradcheck(s_full: bool) -> None:
    g = torch.Generator().manual_seed(0)
    s = 3 if s_full else 1
    alpha = (
        torch.rand(2, 2, s, 4, generator=g, dtype=torch.float64).softmax(-1).requires_grad_(True)
    )
    x = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: attentive_mean_var(a, b), (alpha, x))
    mean, m2 = attentive_mean_var(alpha, x)
    naive_mean = (alpha * x.unsqueeze(1)).sum(-1)
    torch.testing.assert_close(mean, naive_mean)
    torch.testing.assert_close(m2, (alpha * x.unsqueeze(1) ** 2).sum(-1) - naive_mean**2)
    # For unnormalised weights var is the centred sum (what gradcheck differentiated above).
    un = alpha.detach() * 1.7
    mu, var = attentive_mean_var(un, x.detach())
    naive_var = (un * (x.detach().unsqueeze(1) - mu.unsqueeze(-1)) ** 2).sum(-1)
    torch.testing.assert_close(var, naive_var)
    m, sd = attentive_mean_std(alpha, x)
    assert sd.shape == m.shape == (2, 2, 3)


@pytest.mark.parametrize(
    ("name", "args", "kw"),
    [
        ("TSTP", (4,), {}),
        ("ASTP", (4,), {"bottleneck_dim": 3, "global_context_att": True}),
        ("MQMHASTP", (4,), {"head_num": 2, "bottleneck_dim": 3}),
        ("MQMHASTP", (4,), {"head_num": 2, "d_s": 1, "bottleneck_dim": 3}),
        ("ASP", (1, 8), {}),
    ],
)
def test_layer_gradcheck_with_lengths(name: str, args: tuple, kw: dict) -> None:
    torch.manual_seed(0)
    m = getattr(ours, name)(*args, **kw).double()
    m.train()
    x = torch.randn(3, m.in_dim, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 1])

    def fn(inp: torch.Tensor) -> torch.Tensor:
        return m(inp, lengths)

    assert torch.autograd.gradcheck(fn, (x,), nondet_tol=0.0)


def test_temporal_mean_std_matches_naive_float64() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    lengths = torch.tensor([8, 3, 1])
    x = x * (torch.arange(8) < lengths[:, None]).unsqueeze(1)
    mean, std = temporal_mean_std(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        v = x[b, :, :n]
        var = v.var(-1) if n > 1 else torch.zeros(5, dtype=torch.float64)
        torch.testing.assert_close(mean[b], v.mean(-1))
        torch.testing.assert_close(std[b], (var + 1e-7).sqrt())


def test_masked_batch_norm_uses_valid_frames_only() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, generator=g)
    lengths = torch.tensor([6, 2, 4])
    mask = (torch.arange(6) < lengths[:, None]).unsqueeze(1)
    bn = torch.nn.BatchNorm1d(4).train()
    flat = torch.cat([x[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1).unsqueeze(0)
    want = bn(flat)
    rm, rv = torch.zeros(4), torch.ones(4)
    nbt = torch.tensor(0)
    got = masked_batch_norm(
        x,
        mask,
        running_mean=rm,
        running_var=rv,
        num_batches_tracked=nbt,
        weight=bn.weight,
        bias=bn.bias,
        training=True,
        momentum=bn.momentum,
        eps=bn.eps,
    )
    torch.testing.assert_close(
        torch.cat([got[b, :, :n] for b, n in enumerate(lengths.tolist())], 1), want[0]
    )
    torch.testing.assert_close(rm, bn.running_mean)
    torch.testing.assert_close(rv, bn.running_var)
    assert int(nbt) == 1


def test_autocast_statistics_in_float32() -> None:
    torch.manual_seed(0)
    m = ours.MQMHASTP(48, head_num=4).eval()
    x = torch.randn(2, 48, 30) * 3 + 50.0  # large mean: var = E[x^2] - mu^2 needs fp32
    lengths = torch.tensor([30, 17])
    full = m(x, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x, lengths)
    assert low.dtype == torch.float32
    assert torch.isfinite(low).all()
    # Mean part is an fp32 weighted average of fp32 x: weights are close, so means are close.
    means = low.view(2, 2, 4, 2, 12)[:, :, :, 0]
    torch.testing.assert_close(means, full.view(2, 2, 4, 2, 12)[:, :, :, 0], atol=0.2, rtol=0.01)
    stds = low.view(2, 2, 4, 2, 12)[:, :, :, 1]
    assert (stds > 0.3).all()  # bf16 statistics would cancel to ~0 here


def test_errors_name_the_argument() -> None:
    m = ours.MQMHASTP(48, head_num=4)
    with pytest.raises(ValueError, match=r"\(B, F, T\)"):
        m(torch.randn(48, 10))
    with pytest.raises(ValueError, match="in_dim = 48"):
        m(torch.randn(2, 40, 10))
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        m(torch.randn(2, 48, 10), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"lengths\[0\] = 11"):
        m(torch.randn(2, 48, 10), torch.tensor([11, 2]))
    with pytest.raises(TypeError, match="integer"):
        m(torch.randn(2, 48, 10), torch.tensor([3.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        m(torch.randn(2, 48, 10), torch.tensor([3]))
    with pytest.raises(TypeError, match="floating"):
        m(torch.ones(2, 48, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="divisible by head_num"):
        ours.MHASTP(10, head_num=3)
    with pytest.raises(ValueError, match="in_dim >= 1"):
        ours.ASTP(0)
    with pytest.raises(TypeError, match="in_dim"):
        ours.TSTP(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one frame"):
        ours.TSTP(3)(torch.randn(2, 3, 0))
    with pytest.raises(TypeError):
        ours.ASTP(8, 16, False, 4)  # type: ignore[misc]  # past WeSpeaker's positional arguments


def test_float64_stays_float64_and_half_input_gives_float32() -> None:
    m = ours.ASTP(8, bottleneck_dim=4)
    assert m.double()(torch.randn(2, 8, 5, dtype=torch.float64)).dtype == torch.float64
    t = ours.TSTP(8)
    assert t(torch.randn(2, 8, 5).half()).dtype == torch.float32


_HAS_NUMBA = importlib.util.find_spec("numba") is not None
_IMPLS = ["fused", "torch"] + (["numba"] if _HAS_NUMBA else [])


@pytest.mark.parametrize("impl", _IMPLS)
@pytest.mark.parametrize(("s_full", "n_layers"), [(False, 2), (True, 2), (True, 1), (False, 3)])
def test_attentive_pool_gradcheck_and_tiling(
    impl: str, s_full: bool, n_layers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import speechattn.functional.pooling as fp

    monkeypatch.setattr(tp, "_TILE_ELEMENTS", 1)  # one item per tile: exercises the tiling
    g = torch.Generator().manual_seed(0)
    d = dict(dtype=torch.float64)
    heads, queries, c, k, frames = 2, 2, 3, 4, 5
    s = c if s_full else 1
    dims = [c] + [k] * (n_layers - 1) + [s]
    ws = [
        torch.randn(heads, queries, dims[i + 1], dims[i], generator=g, **d) for i in range(n_layers)
    ]
    bs = [torch.randn(heads, queries, dims[i + 1], generator=g, **d) for i in range(n_layers)]
    mask = torch.tensor(
        [[True] * 5, [True, True, False, False, False], [True] + [False] * 4]
    ).unsqueeze(1)
    x = torch.randn(3, heads * c, frames, generator=g, **d) * mask
    ib = torch.randn(3, heads * queries * dims[1], generator=g, **d)
    args = [t.requires_grad_(True) for t in (x, ib, *ws, *bs)]

    def fn(xx, ibb, *p):  # type: ignore[no-untyped-def]
        return fp.attentive_pool_mean_std(
            xx, mask, list(p[:n_layers]), list(p[n_layers:]), item_bias=ibb, impl=impl
        )

    assert torch.autograd.gradcheck(fn, tuple(args))
    other = fp.attentive_pool_mean_std(
        x, mask, ws, bs, item_bias=ib, impl="torch" if impl == "fused" else "fused"
    )
    for a, b in zip(fn(*args), other):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", ["fused"] + (["numba"] if _HAS_NUMBA else []))
@pytest.mark.parametrize("recompute", ["none", "softmax", "all"])
@pytest.mark.parametrize(("s_full", "n_layers", "prefix"), [(True, 2, True), (False, 3, False)])
def test_attentive_pool_backward_paths_gradcheck(
    impl: str,
    recompute: str,
    s_full: bool,
    n_layers: int,
    prefix: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every backward path (kept weights, kept activations, full recompute; torch ops or numba),
    several folded tiles of 2 items, prefix and non-prefix keep-masks: gradcheck in float64 and
    equality with the plain-autograd twin, whose padded frames hold NaN to prove they are unread."""
    import speechattn.functional.pooling as fp

    monkeypatch.setattr(tp, "_TILE_ELEMENTS", 2 * (2 * 2 * 4 * 6))  # two items per tile
    g = torch.Generator().manual_seed(1)
    d = dict(dtype=torch.float64)
    heads, queries, c, k, frames = 2, 2, 3, 4, 6
    s = c if s_full else 1
    dims = [c] + [k] * (n_layers - 1) + [s]
    ws = [
        torch.randn(heads, queries, dims[i + 1], dims[i], generator=g, **d) for i in range(n_layers)
    ]
    bs = [torch.randn(heads, queries, dims[i + 1], generator=g, **d) for i in range(n_layers)]
    rows = [[True] * 6, [True] * 3 + [False] * 3, [True] + [False] * 5, [True] * 5 + [False]]
    if not prefix:  # holes inside the sequence: the torch.where path
        rows = [[True, False, True, True, False, True], *rows[1:3], [False, True] * 3]
    mask = torch.tensor(rows).unsqueeze(1)
    x = torch.randn(4, heads * c, frames, generator=g, **d)
    ib = torch.randn(4, heads * queries * dims[1], generator=g, **d)
    args = [t.requires_grad_(True) for t in (x, ib, *ws, *bs)]

    def fn(xx, ibb, *p):  # type: ignore[no-untyped-def]
        return fp.attentive_pool_mean_std(
            xx,
            mask,
            list(p[:n_layers]),
            list(p[n_layers:]),
            item_bias=ibb,
            impl=impl,
            recompute=recompute,
        )

    assert torch.autograd.gradcheck(fn, tuple(args))
    x_nan = x.detach().masked_fill(~mask, float("nan")).requires_grad_(True)
    ours = fp.attentive_pool_mean_std(
        x_nan, mask, ws, bs, item_bias=ib, impl=impl, recompute=recompute
    )
    ref = fp.attentive_pool_mean_std(x, mask, ws, bs, item_bias=ib, impl="torch")
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    w = torch.randn(ours[0].shape, generator=g, **d)
    grads = torch.autograd.grad((ours[0] * w).sum() + ours[1].sum(), [x_nan, ib, *ws, *bs])
    grads_ref = torch.autograd.grad((ref[0] * w).sum() + ref[1].sum(), [x, ib, *ws, *bs])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
    assert (grads[0].masked_select(~mask.expand_as(x)) == 0).all()


def test_recompute_auto_follows_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import speechattn.functional.pooling as fp

    assert tp._resolve_recompute("auto", 10, 5) == "none"
    monkeypatch.setattr(tp, "_SAVE_BUDGET_BYTES", 8)
    assert tp._resolve_recompute("auto", 10, 5) == "softmax"
    assert tp._resolve_recompute("auto", 10, 9) == "all"
    assert tp._resolve_recompute("softmax", 1, 1) == "softmax"
    with pytest.raises(ValueError, match="recompute"):
        fp.attentive_pool_mean_std(
            torch.randn(1, 2, 3), None, [torch.randn(1, 1, 1, 2)], [None], recompute="some"
        )


def test_impl_numba_errors_without_cpu_float() -> None:
    import speechattn.functional.pooling as fp

    with pytest.raises(ValueError, match="numba"):
        fp.attentive_pool_mean_std(
            torch.randn(1, 2, 3).half(),
            None,
            [torch.randn(1, 1, 1, 2).half()],
            [None],
            impl="numba",
        )


def test_layer_recompute_modes_agree() -> None:
    """The functional entry points pass ``recompute`` through; every mode gives the same grads."""
    from speechattn.functional.pooling import multi_head_attentive_statistics_pooling as mh

    m = ours.MQMHASTP(24, head_num=4)
    per_query = [q.stacked_parameters() for q in m.n_query]
    ws = [torch.cat([p[0][i] for p in per_query], dim=1) for i in range(2)]
    bs = [torch.cat([p[1][i] for p in per_query], dim=1) for i in range(2)]  # type: ignore[misc]
    x = torch.randn(3, 24, 9)
    lengths = torch.tensor([9, 5, 1])
    grads = []
    for mode in ("none", "softmax", "all"):
        xg = x.clone().requires_grad_(True)
        out = mh(xg, lengths, weights=ws, biases=bs, head_num=4, query_num=2, recompute=mode)
        torch.testing.assert_close(out, m(x, lengths))
        grads.append(torch.autograd.grad(out.square().sum(), [xg, *ws])[0:3])
    for g in grads[1:]:
        for a, b in zip(g, grads[0]):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("impl", ["fused"] + (["numba"] if _HAS_NUMBA else []))
@pytest.mark.parametrize("s_full", [True, False])
def test_attentive_pool_expanded_incoming_gradients(impl: str, s_full: bool) -> None:
    """``.sum().backward()`` hands the backward stride-0 gradients: same result as dense ones."""
    import speechattn.functional.pooling as fp

    g = torch.Generator().manual_seed(2)
    d = dict(dtype=torch.float64)
    heads, queries, c, k, frames = 2, 2, 3, 4, 6
    s = c if s_full else 1
    ws = [
        torch.randn(heads, queries, k, c, generator=g, **d),
        torch.randn(heads, queries, s, k, generator=g, **d),
    ]
    x = torch.randn(3, heads * c, frames, generator=g, **d)
    mask = (torch.arange(frames) < torch.tensor([6, 3, 1])[:, None]).unsqueeze(1)
    grads = []
    for impl_i in (impl, "torch"):
        xg = x.clone().requires_grad_(True)
        m, sd = fp.attentive_pool_mean_std(xg, mask, ws, [None, None], impl=impl_i)
        if impl_i == "torch":
            m.backward(torch.ones_like(m), retain_graph=True)
            sd.backward(torch.full_like(sd, 2.0))
        else:
            one = torch.ones((), **d)
            torch.autograd.backward([m, sd], [one.expand(m.shape), (2 * one).expand(sd.shape)])
        grads.append(xg.grad)
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("ASTP", (12,), {"bottleneck_dim": 4}),
        ("ASTP", (12,), {"bottleneck_dim": 4, "global_context_att": True}),
        ("MQMHASTP", (12,), {"head_num": 2, "bottleneck_dim": 4}),
        ("MHASTP", (12,), {"head_num": 3, "d_s": 1, "bottleneck_dim": 4}),
        ("ASP", (1, 12), {}),  # D = 1 * 8 * 1 = 8
    ],
)
def test_double_backward_through_pooling_layers(
    name: str, args: tuple[int, ...], kwargs: dict[str, object]
) -> None:
    """create_graph=True works (a gradient penalty) and matches the pure-torch spec (gradgradcheck)."""
    torch.manual_seed(0)
    layer = getattr(ours, name)(*args, **kwargs).double()
    feat = layer.in_dim
    x = torch.randn(2, feat, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])
    layer.eval()  # ASP: BatchNorm running statistics, so the function is deterministic

    def fn(inp: torch.Tensor) -> torch.Tensor:
        return layer(inp, lengths)

    (gx,) = torch.autograd.grad(fn(x).square().sum(), x, create_graph=True)
    penalty = gx.square().sum()
    penalty.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.autograd.gradgradcheck(fn, (x,), atol=1e-5, rtol=1e-4)


def test_temporal_mean_std_validates_lengths_and_ignores_padding() -> None:
    x = torch.randn(2, 4, 6)
    for bad in ([0, 3], [7, 3], [-1, 3]):
        with pytest.raises(ValueError, match=r"lengths\[0\]"):
            temporal_mean_std(x, torch.tensor(bad))
    with pytest.raises(TypeError, match="integer"):
        temporal_mean_std(x, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        temporal_mean_std(x, torch.tensor([2, 3, 4]))
    with pytest.raises(ValueError, match=r"\(B, F, T\)"):
        temporal_mean_std(torch.randn(2, 4), torch.tensor([1, 1]))
    lengths = torch.tensor([6, 3])
    noisy = x.clone()
    noisy[1, :, 3:] = float("nan")  # padding content never matters
    mean, std = temporal_mean_std(noisy, lengths)
    torch.testing.assert_close(mean[1], x[1, :, :3].mean(-1))
    torch.testing.assert_close(std[1], torch.sqrt(x[1, :, :3].var(-1) + 1e-7))
    torch.testing.assert_close(mean[0], x[0].mean(-1))
