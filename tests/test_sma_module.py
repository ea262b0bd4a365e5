"""Tests of speechattn.nn.StepwiseMonotonicMultiheadAttention and its functional core."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.keonlee_reference import reference_recurrence
from speechattn.functional.monotonic_attention import (
    expected_stay_prob,
    select_heads,
    stepwise_monotonic_attention,
)
from speechattn.nn import SMAOutput, StepwiseMonotonicMultiheadAttention

D, H = 16, 4


def make(seed: int = 0, **kw: object) -> StepwiseMonotonicMultiheadAttention:
    torch.manual_seed(seed)
    kw.setdefault("dropout", 0.0)
    kw.setdefault("initial_stay_prob", 0.8)
    return StepwiseMonotonicMultiheadAttention(embed_dim=D, num_heads=H, **kw)  # type: ignore[arg-type]


def batch(seed: int = 1, b: int = 3, u: int = 5, t: int = 17, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, u, D, generator=g, dtype=dtype)
    k = torch.randn(b, t, D, generator=g, dtype=dtype)
    v = torch.randn(b, t, D, generator=g, dtype=dtype)
    ql = torch.tensor([u, 3, 1][:b] + [u] * max(0, b - 3))
    kl = torch.tensor([t, 11, 6][:b] + [t] * max(0, b - 3))
    return q, k, v, ql, kl


def pad_garbage(x: torch.Tensor, lengths: torch.Tensor, value: float) -> torch.Tensor:
    keep = torch.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
    return torch.where(keep, x, torch.full_like(x, value))


CONFIGS = [
    dict(tunable=True, head_selection="focus_rate"),
    dict(tunable=True, head_selection="per_head"),
    dict(tunable=False),
]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("mode", ["soft", "hard", "viterbi"])
def test_shapes_and_zero_padding(cfg: dict, mode: str) -> None:
    m = make(**cfg).eval()
    q, k, v, ql, kl = batch()
    out = m(q, k, v, query_lengths=ql, key_lengths=kl, mode=mode)  # type: ignore[arg-type]
    assert isinstance(out, SMAOutput)
    b, u, t = 3, q.shape[1], k.shape[1]
    assert out.output.shape == (b, u, D)
    assert out.alignment.shape == (b, u, t)
    assert out.attn_weights.shape == (b, H, u, t)
    assert out.focus_rate.shape == (b, H)
    assert out.head_index.shape == (b,) and out.head_index.dtype == torch.int64
    assert torch.equal(out.head_index, out.focus_rate.argmax(-1))
    if cfg["tunable"]:
        assert out.p_choose is not None and out.p_choose.shape == (b, u, t)
    else:
        assert out.p_choose is None
    tv = torch.arange(u)[None] < ql[:, None]
    fv = torch.arange(t)[None] < kl[:, None]
    cell = tv[:, :, None] & fv[:, None, :]
    assert torch.all(out.output[~tv] == 0)
    assert torch.all(out.alignment[~cell] == 0)
    assert torch.all(out.attn_weights.transpose(0, 1)[:, ~cell] == 0)
    assert torch.isfinite(out.output).all() and torch.isfinite(out.alignment).all()
    assert ((out.focus_rate > 0) & (out.focus_rate <= 1 + 1e-6)).all()


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("training", [False, True])
def test_padding_content_never_changes_outputs(cfg: dict, training: bool) -> None:
    m = make(**cfg, layer_norm=True, residual=True).train(training)
    q, k, v, ql, kl = batch()
    outs = []
    for fill in (0.0, 1e4, float("nan"), float("inf")):
        torch.manual_seed(5)  # same noise draw in training
        outs.append(
            m(
                pad_garbage(q, ql, fill),
                pad_garbage(k, kl, -fill),
                pad_garbage(v, kl, fill),
                query_lengths=ql,
                key_lengths=kl,
            )
        )
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            if a is None:
                assert b is None
                continue
            assert torch.isfinite(b).all()
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("mode", ["soft", "hard", "viterbi"])
def test_batch_equals_per_item(cfg: dict, mode: str) -> None:
    m = make(**cfg, layer_norm=True).eval()
    q, k, v, ql, kl = batch()
    full = m(q, k, v, query_lengths=ql, key_lengths=kl, mode=mode)  # type: ignore[arg-type]
    for i in range(3):
        u, t = int(ql[i]), int(kl[i])
        one = m(q[i : i + 1, :u], k[i : i + 1, :t], v[i : i + 1, :t], mode=mode)  # type: ignore[arg-type]
        torch.testing.assert_close(one.output[0], full.output[i, :u], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            one.alignment[0], full.alignment[i, :u, :t], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            one.attn_weights[0], full.attn_weights[i, :, :u, :t], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(one.focus_rate[0], full.focus_rate[i], rtol=1e-5, atol=1e-6)
        assert int(one.head_index[0]) == int(full.head_index[i])


def _oracle_soft(m: StepwiseMonotonicMultiheadAttention, q, k, v, per_head: bool) -> torch.Tensor:
    """float64 loop oracle for one unpadded item (b=1): p from the equation, reference loop."""
    h, dh = m.num_heads, m.head_dim
    qh = m.q_proj(q).view(1, -1, h, dh).transpose(1, 2)[0]
    kh = m.k_proj(k).view(1, -1, h, dh).transpose(1, 2)[0]
    vh = m.v_proj(v).view(1, -1, h, dh).transpose(1, 2)[0]
    e = qh @ kh.transpose(-1, -2) / math.sqrt(dh) + m.stay_bias.view(h, 1, 1)
    p = torch.sigmoid(e)
    p[:, -1, :] = 1.0  # mass="preserve": the last token absorbs
    a0 = torch.zeros(h, q.shape[1], 1, dtype=q.dtype)
    a0[:, 0] = 1.0
    alpha = reference_recurrence(p, a0)  # (h, u, t)
    pr = [
        (alpha[j] / alpha[j].sum(0, keepdim=True).clamp_min(1e-300)).amax(0).mean()
        for j in range(h)
    ]
    best = int(torch.stack(pr).argmax())
    if per_head:
        ctx = (alpha @ vh).transpose(0, 1).reshape(q.shape[1], -1)
    else:
        ctx = alpha[best] @ vh.transpose(0, 1).reshape(k.shape[1], -1)
    return m.out_proj(ctx), alpha[best]


@pytest.mark.parametrize("per_head", [False, True])
def test_soft_matches_float64_loop_oracle(per_head: bool) -> None:
    m = make(head_selection="per_head" if per_head else "focus_rate").double().eval()
    q, k, v, ql, kl = batch(dtype=torch.float64)
    out = m(q, k, v, query_lengths=ql, key_lengths=kl, mode="soft")
    with torch.no_grad():
        for i in range(3):
            u, t = int(ql[i]), int(kl[i])
            ref_out, ref_align = _oracle_soft(
                m, q[i : i + 1, :u], k[i : i + 1, :t], v[i : i + 1, :t], per_head
            )
            torch.testing.assert_close(out.output[i, :u], ref_out, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(out.alignment[i, :u, :t], ref_align, rtol=1e-10, atol=1e-10)
            # mass="preserve": every valid frame's column sums to 1.
            torch.testing.assert_close(
                out.alignment[i, :u, :t].sum(0), torch.ones(t, dtype=torch.float64)
            )


def test_plain_mha_matches_sdpa() -> None:
    m = make(tunable=False).eval()
    q, k, v, ql, kl = batch()
    out = m(q, k, v, query_lengths=ql, key_lengths=kl)
    b, u, t = q.shape[0], q.shape[1], k.shape[1]
    split = lambda x: x.view(b, -1, H, D // H).transpose(1, 2)  # noqa: E731
    keep = (torch.arange(t)[None] < kl[:, None])[:, None, None, :]
    ref = F.scaled_dot_product_attention(
        split(m.q_proj(q)), split(m.k_proj(k)), split(m.v_proj(v)), attn_mask=keep
    )
    ref = m.out_proj(ref.transpose(1, 2).reshape(b, u, D))
    tv = torch.arange(u)[None] < ql[:, None]
    torch.testing.assert_close(out.output[tv], ref[tv], rtol=1e-5, atol=1e-5)
    # Softmax rows over valid frames sum to 1 on valid tokens.
    torch.testing.assert_close(
        out.attn_weights.sum(-1).transpose(0, 1)[:, tv], torch.ones(H, int(tv.sum()))
    )


def test_focus_rate_selection_uses_all_heads_values() -> None:
    m = make().eval()
    q, k, v, ql, kl = batch()
    out = m(q, k, v, query_lengths=ql, key_lengths=kl)
    torch.testing.assert_close(out.alignment, select_heads(out.attn_weights, out.head_index))
    vcat = m.v_proj(v) * (torch.arange(k.shape[1])[None] < kl[:, None])[..., None]
    ref = m.out_proj(out.alignment @ vcat)
    tv = torch.arange(q.shape[1])[None] < ql[:, None]
    torch.testing.assert_close(out.output[tv], ref[tv], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("selection", ["focus_rate", "per_head"])
@pytest.mark.parametrize("mode", ["hard", "viterbi"])
def test_hard_and_viterbi_durations_sum_to_mel_length(selection: str, mode: str) -> None:
    m = make(head_selection=selection, eval_mode=mode).eval()
    q, k, v, ql, kl = batch(u=6, t=30)
    with torch.no_grad():
        out = m(q, k, v, query_lengths=ql, key_lengths=kl)  # mode from eval_mode
    a = out.alignment
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(a.sum((1, 2)), kl.to(a.dtype))
    for i in range(3):
        u, t = int(ql[i]), int(kl[i])
        col = a[i, :u, :t].argmax(0)
        assert torch.all(a[i, :u, :t].sum(0) == 1)
        assert torch.all(col.diff() >= 0) and torch.all(col.diff() <= 1)
        assert int(col[0]) == 0
        if mode == "viterbi":
            assert int(col[-1]) == u - 1  # forced to end on the last token
            assert torch.all(a[i, :u, :t].sum(1) >= 1)  # every valid token gets a frame


def test_viterbi_reaches_end_where_hard_rule_stalls() -> None:
    # A large stay bias keeps p > 0.5 everywhere: the hard rule never advances, Viterbi does.
    m = make(initial_stay_prob=0.99).eval()
    q, k, v, ql, kl = batch(u=6, t=30)
    with torch.no_grad():
        hard = m(q, k, v, query_lengths=ql, key_lengths=kl, mode="hard")
        vit = m(q, k, v, query_lengths=ql, key_lengths=kl, mode="viterbi")
    assert torch.all(hard.alignment[:, 0].sum(-1) == kl.float())
    for i in range(3):
        assert vit.alignment[i, int(ql[i]) - 1, int(kl[i]) - 1] == 1


@pytest.mark.parametrize("cfg", CONFIGS)
def test_gradients_flow(cfg: dict) -> None:
    m = make(**cfg, layer_norm=True, dropout=0.1).train()
    q, k, v, ql, kl = batch()
    q.requires_grad_(True)
    out = m(q, k, v, query_lengths=ql, key_lengths=kl)
    (out.output.pow(2).sum() + out.alignment.sum()).backward()
    for name, p in m.named_parameters():
        if name == "stay_bias" and not cfg["tunable"]:
            assert p.grad is None
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert q.grad is not None and torch.all(q.grad[1, 3:] == 0)  # padded tokens get no gradient


@pytest.mark.parametrize(
    ("selection", "impl", "fast"),
    [("focus_rate", "torch", False), ("per_head", "torch", False), ("focus_rate", "auto", True)],
)
def test_gradcheck_functional(selection: str, impl: str, fast: bool) -> None:
    g = torch.Generator().manual_seed(3)
    b, h, u, t, dh = 2, 2, 3, 6, 3
    q = torch.randn(b, h, u, dh, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, h, t, dh, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b, h, t, dh, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.tensor([0.5, 1.0], dtype=torch.float64, requires_grad=True)
    ql, kl = torch.tensor([3, 2]), torch.tensor([6, 4])

    def fn(q, k, v, r):
        res = stepwise_monotonic_attention(
            q,
            k,
            v,
            query_lengths=ql,
            key_lengths=kl,
            stay_bias=r,
            head_selection=selection,
            impl=impl,
        )
        return res.context, res.alignment

    assert torch.autograd.gradcheck(fn, (q, k, v, r), eps=1e-6, atol=1e-6, fast_mode=fast)


def test_noise_only_in_training_and_eval_mode_default() -> None:
    m = make(noise_std=1.0)
    q, k, v, ql, kl = batch()
    m.train()
    a = m(q, k, v, query_lengths=ql, key_lengths=kl).alignment
    b = m(q, k, v, query_lengths=ql, key_lengths=kl).alignment
    assert not torch.allclose(a, b)
    m.eval()
    a = m(q, k, v, query_lengths=ql, key_lengths=kl).alignment
    b = m(q, k, v, query_lengths=ql, key_lengths=kl).alignment
    assert torch.equal(a, b)
    assert not set(a.unique().tolist()) <= {0.0, 1.0}  # eval_mode="soft" by default
    m.eval_mode = "hard"
    hard = m(q, k, v, query_lengths=ql, key_lengths=kl).alignment
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


def test_stay_bias_init_and_expected_stay_prob() -> None:
    m = StepwiseMonotonicMultiheadAttention(embed_dim=D, num_heads=H)
    torch.testing.assert_close(m.stay_bias.detach(), torch.full((H,), 3.5))
    m = StepwiseMonotonicMultiheadAttention(embed_dim=D, num_heads=H, initial_stay_prob=0.9)
    torch.testing.assert_close(torch.sigmoid(m.stay_bias.detach()), torch.full((H,), 0.9))
    p = expected_stay_prob(torch.tensor([10, 30]), torch.tensor([100, 100]))
    assert abs(p - 0.8) < 1e-12
    assert StepwiseMonotonicMultiheadAttention.expected_stay_prob is expected_stay_prob


def test_initial_alignment_shifts_start() -> None:
    m = make().eval()
    q, k, v, ql, kl = batch()
    a0 = torch.zeros(3, q.shape[1])
    a0[0, 2] = 1.0
    a0[1, 1] = 1.0
    a0[2, 0] = 1.0
    out = m(q, k, v, query_lengths=ql, key_lengths=kl, initial_alignment=a0, mode="soft")
    assert torch.all(out.alignment[0, :2] == 0)  # monotonic: never goes back before token 2
    assert torch.all(out.alignment[1, :1] == 0)


def test_mass_drop_lets_mass_leave() -> None:
    m = make(mass="drop", initial_stay_prob=0.3).eval()
    q, k, v, ql, kl = batch(t=30)
    out = m(q, k, v, query_lengths=ql, key_lengths=kl, mode="soft")
    cols = out.alignment[0].sum(0)
    assert cols[-1] < 0.5 and torch.all(cols <= 1 + 1e-6)


def test_low_precision_runs_in_float32() -> None:
    m = make().to(torch.bfloat16).eval()
    q, k, v, ql, kl = batch(dtype=torch.bfloat16)
    out = m(q, k, v, query_lengths=ql, key_lengths=kl)
    assert out.output.dtype == torch.bfloat16
    assert out.alignment.dtype == torch.float32
    assert torch.isfinite(out.output).all()


def test_extreme_inputs_never_nan() -> None:
    m = make(noise_std=0.0).train()
    q, k, v, ql, kl = batch()
    out = m(q * 1e4, k * 1e4, v, query_lengths=ql, key_lengths=kl)
    out.output.sum().backward()
    assert torch.isfinite(out.output).all() and torch.isfinite(out.alignment).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_bad_inputs_raise_clear_errors() -> None:
    m = make().eval()
    q, k, v, ql, kl = batch()
    with pytest.raises(
        ValueError, match=r"Expected query of shape \(B, N, 16\); found \(3, 5, 8\)"
    ):
        m(q[..., :8], k, v)
    with pytest.raises(
        ValueError, match=r"Expected key of shape \(3, N, 16\); found \(2, 17, 16\)"
    ):
        m(q, k[:2], v)
    with pytest.raises(ValueError, match=r"rank|shape"):
        m(q[0], k, v)
    with pytest.raises(ValueError, match="same number of frames"):
        m(q, k, v[:, :5])
    with pytest.raises(TypeError, match=r"dtype torch.float32 .* found torch.float64"):
        m(q.double(), k, v)
    with pytest.raises(ValueError, match="device"):
        m(q, k.to("meta"), v)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        m(q.tolist(), k, v)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query_lengths\[1\] = 0"):
        m(q, k, v, query_lengths=torch.tensor([5, 0, 1]), key_lengths=kl)
    with pytest.raises(ValueError, match=r"key_lengths\[2\] = 18"):
        m(q, k, v, query_lengths=ql, key_lengths=torch.tensor([1, 2, 18]))
    with pytest.raises(TypeError, match="integer"):
        m(q, k, v, query_lengths=ql.float(), key_lengths=kl)
    with pytest.raises(ValueError, match="mode"):
        m(q, k, v, mode="argmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mel_lengths\[|text_lengths\[|\[1\]"):
        m(q, k, v, query_lengths=ql, key_lengths=torch.tensor([17, 2, 6]), mode="viterbi")
    with pytest.raises(ValueError, match=r"initial_alignment of shape \(3, 5\)"):
        m(q, k, v, initial_alignment=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="divide embed_dim"):
        StepwiseMonotonicMultiheadAttention(embed_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="initial_stay_prob"):
        StepwiseMonotonicMultiheadAttention(embed_dim=8, num_heads=2, initial_stay_prob=1.0)
    with pytest.raises(ValueError, match="head_selection"):
        StepwiseMonotonicMultiheadAttention(embed_dim=8, num_heads=2, head_selection="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_mode"):
        StepwiseMonotonicMultiheadAttention(embed_dim=8, num_heads=2, eval_mode="argmax")  # type: ignore[arg-type]


def test_kdim_vdim() -> None:
    torch.manual_seed(0)
    m = StepwiseMonotonicMultiheadAttention(embed_dim=D, num_heads=H, kdim=10, vdim=6).eval()
    out = m(torch.randn(2, 4, D), torch.randn(2, 9, 10), torch.randn(2, 9, 6))
    assert out.output.shape == (2, 4, D)


@pytest.mark.parametrize("mode", ["soft", "viterbi"])
def test_on_device_padding_invariant_and_matches_cpu(device: torch.device, mode: str) -> None:
    m = make().eval()
    q, k, v, ql, kl = batch()
    ref = m(q, k, v, query_lengths=ql, key_lengths=kl, mode=mode)  # type: ignore[arg-type]
    md = m.to(device)
    args = [pad_garbage(x, n, 1e4).to(device) for x, n in ((q, ql), (k, kl), (v, kl))]
    out = md(*args, query_lengths=ql.to(device), key_lengths=kl.to(device), mode=mode)  # type: ignore[arg-type]
    for a, b in zip(ref, out):
        assert a is not None and b is not None
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 12)), min_size=1, max_size=3),
    selection=st.sampled_from(["focus_rate", "per_head"]),
    mode=st.sampled_from(["soft", "hard", "viterbi"]),
    seed=st.integers(0, 2**16),
)
def test_property_batch_equals_per_item_and_padding(
    lengths: list[tuple[int, int]], selection: str, mode: str, seed: int
) -> None:
    """Random ragged batches: each item equals its unpadded run; padded cells are exactly 0."""
    m = make(seed=seed % 7, head_selection=selection).eval()
    ql = torch.tensor([u for u, _ in lengths])
    kl = torch.tensor([u + extra for u, extra in lengths])  # frames >= tokens (Viterbi)
    b, u_max, t_max = len(lengths), int(ql.max()), int(kl.max())
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, u_max, D, generator=g)
    k = torch.randn(b, t_max, D, generator=g)
    full = m(q, k, k, query_lengths=ql, key_lengths=kl, mode=mode)  # type: ignore[arg-type]
    for i in range(b):
        u, t = int(ql[i]), int(kl[i])
        one = m(q[i : i + 1, :u], k[i : i + 1, :t], k[i : i + 1, :t], mode=mode)  # type: ignore[arg-type]
        torch.testing.assert_close(one.output[0], full.output[i, :u], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            one.alignment[0], full.alignment[i, :u, :t], rtol=1e-4, atol=1e-6
        )
        assert torch.all(full.alignment[i, u:] == 0) and torch.all(full.alignment[i, :, t:] == 0)
        assert torch.all(full.output[i, u:] == 0)
        # mass="preserve": every valid frame's column sums to 1, in every mode.
        torch.testing.assert_close(full.alignment[i, :u, :t].sum(0), torch.ones(t))


# ---------------------------------------------------------------------------------------------
# The stay-probability step alone (shared by the layer and the aligner)
# ---------------------------------------------------------------------------------------------


def test_stay_probability_is_the_layers_first_step() -> None:
    m = make(head_selection="focus_rate").double().eval()
    q, k, v, ql, kl = batch(dtype=torch.float64)
    out = m(q, k, v, query_lengths=ql, key_lengths=kl)
    p = m.stay_probability(q, k, query_lengths=ql, key_lengths=kl)
    assert p.shape == (3, H, 5, 17)
    torch.testing.assert_close(select_heads(p, out.head_index), out.p_choose)
    # Same padding contract as the layer: garbage in padded tokens/frames changes nothing.
    p_garbage = m.stay_probability(
        pad_garbage(q, ql, math.nan), pad_garbage(k, kl, math.inf), query_lengths=ql, key_lengths=kl
    )
    assert torch.equal(p_garbage, p)


def test_stepwise_stay_probability_matches_equation_and_gradcheck() -> None:
    from speechattn.functional import stepwise_stay_probability

    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    r = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    ql, kl = torch.tensor([4, 2]), torch.tensor([6, 3])
    p = stepwise_stay_probability(q, k, query_lengths=ql, key_lengths=kl, stay_bias=r)
    for i in range(2):
        for j in range(3):
            e = q[i, j] @ k[i, j].T / math.sqrt(5) + r[j]
            want = torch.zeros(4, 6, dtype=torch.float64)
            want[: ql[i], : kl[i]] = torch.sigmoid(e)[: ql[i], : kl[i]]
            torch.testing.assert_close(p[i, j], want)
    torch.autograd.gradcheck(
        lambda a, b_, c: stepwise_stay_probability(
            a, b_, query_lengths=ql, key_lengths=kl, stay_bias=c
        ),
        (q, k, r),
    )
    with pytest.raises(ValueError, match="stay_bias"):
        stepwise_stay_probability(q, k, stay_bias=torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="noise_std"):
        stepwise_stay_probability(q, k, noise_std=-1.0)


def test_head_block_linear_backward_equals_dense() -> None:
    """The key projection's block-sparse backward equals the dense one (one head per item, and
    the dense fallback when an item has gradient in several heads)."""
    from speechattn.nn.monotonic import _HeadBlockLinear

    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    one_head = torch.zeros(3, 7, 4, 2, dtype=torch.float64)
    for i, j in enumerate([1, 3, 0]):
        one_head[i, :, j] = torch.randn(7, 2, generator=g, dtype=torch.float64)
    for grad in (one_head.view(3, 7, 8), torch.randn(3, 7, 8, generator=g, dtype=torch.float64)):
        ours = torch.autograd.grad(_HeadBlockLinear.apply(x, w, bias, 4), (x, w, bias), grad)
        dense = torch.autograd.grad(F.linear(x, w, bias), (x, w, bias), grad)
        for a, b_ in zip(ours, dense, strict=True):
            torch.testing.assert_close(a, b_)
    torch.autograd.gradcheck(lambda a, b_, c: _HeadBlockLinear.apply(a, b_, c, 4), (x, w, bias))
    # A NaN in another head's block is not skipped: the dense fallback propagates it.
    nan_grad = one_head.clone()
    nan_grad[0, 2, 2, 0] = math.nan
    gx, _, _ = torch.autograd.grad(
        _HeadBlockLinear.apply(x, w, bias, 4), (x, w, bias), nan_grad.view(3, 7, 8)
    )
    assert torch.isnan(gx[0, 2]).all()


def test_empty_batch_is_a_clear_error() -> None:
    from speechattn.compat.keonlee import StepwiseMonotonicMultiheadAttention as KeonleeSMA

    sma = StepwiseMonotonicMultiheadAttention(embed_dim=8, num_heads=2)
    q, k = torch.zeros(0, 3, 8), torch.zeros(0, 5, 8)
    with pytest.raises(ValueError, match="B = 0"):
        sma(q, k, k)
    ref = KeonleeSMA(8, 4, 4)
    with pytest.raises(ValueError, match="B = 0"):
        ref(q, k, k, torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_selected_head_backward_matches_autograd_recompute(noise: float) -> None:
    """The focus-rate path's hand-written backward of the selected head's stay probabilities
    equals autograd through the plain recomputation (gather, mask, matmul, sigmoid), with the
    inputs laid out as head splits of (b, n, h*d) projections (the row-select fast path) and
    padding holding NaN."""
    g = torch.Generator().manual_seed(11)
    b, h, u, t, dh = 3, 4, 6, 20, 5
    ql, kl = torch.tensor([6, 4, 2]), torch.tensor([20, 13, 9])
    qf = torch.randn(b, u, h * dh, generator=g, dtype=torch.float64)
    kf = torch.randn(b, t, h * dh, generator=g, dtype=torch.float64)
    vf = torch.randn(b, t, h * dh, generator=g, dtype=torch.float64)
    qf[1, 4:] = math.nan
    kf[2, 9:] = math.nan
    r = torch.tensor([0.3, -0.2, 0.9, 0.1], dtype=torch.float64)
    w = torch.randn(b, u, t, generator=g, dtype=torch.float64)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], h, dh).transpose(1, 2)

    grads = []
    for path in ("fast", "reference"):
        qq, kk, rr = (x.clone().requires_grad_(True) for x in (qf, kf, r))
        res = stepwise_monotonic_attention(
            split(qq),
            split(kk),
            split(vf),
            query_lengths=ql,
            key_lengths=kl,
            stay_bias=rr,
            noise_std=noise,
            generator=torch.Generator().manual_seed(5),
        )
        if path == "fast":
            p_sel = res.p_choose
        else:  # autograd through the recomputation, same head choice and noise draw
            hi = res.head_index
            tv = torch.arange(u)[None] < ql[:, None]
            fv = torch.arange(t)[None] < kl[:, None]
            q_sel = torch.where(tv[:, :, None], select_heads(split(qq), hi), 0)
            k_sel = torch.where(fv[:, :, None], select_heads(split(kk), hi), 0)
            e = q_sel @ k_sel.transpose(1, 2) / math.sqrt(dh) + rr[hi].view(b, 1, 1)
            if noise > 0:  # one draw for the valid cells, item by item, row-major
                cnt = int((ql * kl).sum())
                flat = torch.randn(cnt, generator=torch.Generator().manual_seed(5), dtype=e.dtype)
                dense = torch.zeros(b, u, t, dtype=e.dtype)
                off = 0
                for i, (m, n) in enumerate(zip(ql.tolist(), kl.tolist(), strict=True)):
                    dense[i, :m, :n] = flat[off : off + m * n].view(m, n)
                    off += m * n
                e = e + dense.mul(noise)
            p_sel = torch.where(tv[:, :, None] & fv[:, None, :], torch.sigmoid(e), 0)
            torch.testing.assert_close(p_sel, res.p_choose, rtol=0, atol=1e-15)
        from speechattn.functional import stepwise_monotonic_alignment

        alpha = stepwise_monotonic_alignment(p_sel, ql, kl, mass="preserve")
        loss = (alpha * w).sum() + (p_sel**2).sum()
        grads.append(torch.autograd.grad(loss, (qq, kk, rr)))
    for a, b_ in zip(*grads, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b_, rtol=1e-12, atol=1e-13)
    assert torch.all(grads[0][0][1, 4:] == 0) and torch.all(grads[0][1][2, 9:] == 0)


def test_head_block_linear_with_known_heads_equals_dense() -> None:
    """Told the selected heads, the key projection's backward equals the dense one."""
    from speechattn.nn.monotonic import _HeadBlockLinear, _HeadHint

    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    heads = torch.tensor([2, 0, 3])
    grad = torch.zeros(3, 7, 4, 2, dtype=torch.float64)
    for i, j in enumerate(heads.tolist()):
        grad[i, :, j] = torch.randn(7, 2, generator=g, dtype=torch.float64)
    hint = _HeadHint()
    hint.head_index = heads
    ours = torch.autograd.grad(
        _HeadBlockLinear.apply(x, w, bias, 4, hint), (x, w, bias), grad.view(3, 7, 8)
    )
    dense = torch.autograd.grad(F.linear(x, w, bias), (x, w, bias), grad.view(3, 7, 8))
    for a, b_ in zip(ours, dense, strict=True):
        torch.testing.assert_close(a, b_)


def test_key_projection_of_valid_rows_only() -> None:
    """With lengths, the key projection computes each item's valid rows (as F.linear) and
    returns 0 in padded rows, whatever they hold (NaN included)."""
    from speechattn.nn.monotonic import _linear_valid_rows

    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 9, 6, generator=g, dtype=torch.float64)
    x[0, 5:] = math.nan
    w = torch.randn(8, 6, generator=g, dtype=torch.float64)
    bias = torch.randn(8, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 9, 2])
    for b_ in (bias, None):
        out, valid = _linear_valid_rows(x, w, b_, lengths)
        assert valid == lengths.tolist()
        dense = F.linear(x, w, b_)
        for i, m in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[i, :m], dense[i, :m])
            assert torch.equal(out[i, m:], torch.zeros_like(out[i, m:]))
    out, valid = _linear_valid_rows(x, w, bias, None)
    assert valid is None and torch.equal(out.isnan(), F.linear(x, w, bias).isnan())


@pytest.mark.parametrize("fast", [True, False])
def test_layer_training_step_does_not_depend_on_padded_key_rows(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layer's outputs and gradients with the valid-rows key projection equal those of the
    dense projection, and padded key content (NaN) changes nothing."""
    import speechattn.nn.monotonic as nm

    g = torch.Generator().manual_seed(9)
    b, u, t, d = 3, 5, 11, 8
    text = torch.randn(b, u, d, generator=g, dtype=torch.float64)
    mel = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    tl, ml = torch.tensor([5, 3, 4]), torch.tensor([11, 7, 9])
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(embed_dim=d, num_heads=2, dropout=0.0)
    layer = layer.double().train()

    def step(key: torch.Tensor) -> list[torch.Tensor]:
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the training noise
        out = layer(text, key, mel, query_lengths=tl, key_lengths=ml)
        (out.output.sum() + out.alignment.sum()).backward()
        grads = [p.grad.clone() for p in layer.parameters() if p.grad is not None]
        return [out.output.detach(), out.alignment.detach(), *grads]

    monkeypatch.setattr(nm, "FAST_KEY_ROWS", False)
    ref = step(mel)
    monkeypatch.setattr(nm, "FAST_KEY_ROWS", fast)
    nan_key = mel.clone()
    nan_key[1, 7:] = math.nan
    for got in (step(mel), step(nan_key) if fast else step(mel)):
        for a, b_ in zip(got, ref, strict=True):
            torch.testing.assert_close(a, b_)


def test_valid_block_context_equals_dense_bmm_and_gradcheck() -> None:
    """The per-item valid-block context product equals the dense ``bmm`` of the zero-padded
    alignment and values (float64), its gradients equal autograd's on the valid cells (0
    elsewhere), padded value rows (NaN) are never read, and it passes gradcheck."""
    from speechattn.functional.monotonic_attention import _ValidContext

    g = torch.Generator().manual_seed(12)
    b, u, t, dv = 3, 5, 9, 4
    ql, kl = [5, 2, 4], [9, 6, 3]
    cell = (torch.arange(u)[None, :, None] < torch.tensor(ql)[:, None, None]) & (
        torch.arange(t)[None, None, :] < torch.tensor(kl)[:, None, None]
    )
    frm = torch.arange(t)[None, :, None] < torch.tensor(kl)[:, None, None]
    a = torch.where(cell, torch.rand(b, u, t, generator=g, dtype=torch.float64), 0)
    v = torch.randn(b, t, dv, generator=g, dtype=torch.float64)
    w = torch.randn(b, u, dv, generator=g, dtype=torch.float64)
    a1, v1 = a.clone().requires_grad_(True), v.clone().requires_grad_(True)
    dense = torch.bmm(a1, torch.where(frm, v1, 0))
    ga_ref, gv_ref = torch.autograd.grad((dense * w).sum(), (a1, v1))
    v_nan = torch.where(frm, v, math.nan)
    a2, v2 = a.clone().requires_grad_(True), v_nan.requires_grad_(True)
    ours = _ValidContext.apply(a2, v2, ql, kl)
    ga, gv = torch.autograd.grad((ours * w).sum(), (a2, v2))
    torch.testing.assert_close(ours, dense, rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(ga, torch.where(cell, ga_ref, 0), rtol=1e-13, atol=1e-14)
    torch.testing.assert_close(gv, gv_ref, rtol=1e-13, atol=1e-14)
    assert torch.all(ga[~cell] == 0) and torch.all(gv[~frm.expand_as(gv)] == 0)
    assert torch.autograd.gradcheck(lambda x, y: _ValidContext.apply(x, y, ql, kl), (a1, v1))


@pytest.mark.parametrize("fast", [False, True])
def test_valid_blocks_layer_equals_dense_path(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without noise the layer's outputs, focus rates and gradients are the same with the
    valid-block context and noise paths and the bias-accumulating ranking matmul on or off
    (float64), and NaN in padded values changes nothing."""
    import speechattn.functional.monotonic_attention as fm

    g = torch.Generator().manual_seed(13)
    b, u, t, d = 3, 6, 12, 8
    text = torch.randn(b, u, d, generator=g, dtype=torch.float64)
    mel = torch.randn(b, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    tl, ml = torch.tensor([6, 3, 5]), torch.tensor([12, 7, 9])
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(
        embed_dim=d, num_heads=2, dropout=0.0, noise_std=0.0, layer_norm=True
    )
    layer = layer.double().train()

    def step(value: torch.Tensor) -> list[torch.Tensor]:
        layer.zero_grad(set_to_none=True)
        out = layer(text, mel, value, query_lengths=tl, key_lengths=ml)
        loss = out.output.sum() + (out.alignment * torch.arange(t)).sum()
        grads = torch.autograd.grad(loss, [mel, value, *layer.parameters()], allow_unused=True)
        outs = [out.output, out.alignment, out.attn_weights, out.focus_rate, out.head_index]
        return [*(x.detach() for x in outs), *(x for x in grads if x is not None)]

    monkeypatch.setattr(fm, "FAST_VALID_BLOCKS", False)
    monkeypatch.setattr(fm, "FUSED_RANKING_BIAS", False)
    value = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    ref = step(value.clone().requires_grad_(True))
    monkeypatch.setattr(fm, "FAST_VALID_BLOCKS", fast)
    monkeypatch.setattr(fm, "FUSED_RANKING_BIAS", fast)
    nan_value = value.clone()
    nan_value[1, 7:] = math.nan
    nan_value[2, 9:] = math.nan
    for v in (value, nan_value):
        got = step(v.clone().requires_grad_(True))
        assert len(got) == len(ref)
        for a, b_ in zip(got, ref, strict=True):
            torch.testing.assert_close(torch.nan_to_num(a, nan=0.0), b_)


def test_valid_cell_training_noise_is_standard_gaussian() -> None:
    """The selected head's training noise (drawn for valid cells only) is N(0, noise_std^2) on
    every valid cell, independent across cells, and reproducible with a generator: recovered as
    ``logit(p_choose) - logit(p_choose without noise)``."""
    from speechattn.functional.monotonic_attention import stepwise_monotonic_attention

    g = torch.Generator().manual_seed(14)
    b, h, u, t, dh = 4, 2, 30, 120, 4
    ql, kl = torch.tensor([30, 21, 12, 25]), torch.tensor([120, 80, 61, 100])
    q = torch.randn(b, u, h * dh, generator=g, dtype=torch.float64).view(b, u, h, dh)
    k = torch.randn(b, t, h * dh, generator=g, dtype=torch.float64).view(b, t, h, dh)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    cell = (torch.arange(u)[None, :, None] < ql[:, None, None]) & (
        torch.arange(t)[None, None, :] < kl[:, None, None]
    )

    def p(noise: float, seed: int) -> torch.Tensor:
        res = stepwise_monotonic_attention(
            q,
            k,
            k,
            query_lengths=ql,
            key_lengths=kl,
            stay_bias=0.2,
            noise_std=noise,
            generator=torch.Generator().manual_seed(seed),
        )
        assert res.p_choose is not None
        return res.p_choose

    clean = torch.logit(p(0.0, 0)[cell])
    z = (torch.logit(p(0.5, 3)[cell]) - clean) / 0.5
    assert z.numel() == int((ql * kl).sum()) > 5000
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    assert abs(float(z.std()) - 1.0) < 0.03
    assert abs(float((z.abs() < 1).double().mean()) - 0.6827) < 0.02  # Gaussian, not uniform
    assert abs(float(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1])) < 0.05
    torch.testing.assert_close(torch.logit(p(0.5, 3)[cell]), torch.logit(p(0.5, 3)[cell]))
    assert not torch.equal(p(0.5, 3), p(0.5, 4))
    assert torch.all(p(0.5, 3)[~cell] == 0)


@pytest.mark.parametrize("fast", [False, True])
def test_context_dropout_is_bernoulli_keep_mask(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training dropout on the projected context zeroes a fraction ``p`` of the values and
    scales the rest by ``1 / (1 - p)``, independently per value, with the gradient through the
    same mask; eval mode and ``p = 0`` are the identity (both the uniform-draw path and
    ``nn.Dropout``)."""
    import speechattn.nn.monotonic as nm

    monkeypatch.setattr(nm, "FAST_DROPOUT", fast)
    m = make(dropout=0.3).train()
    x = torch.ones(8, 50, 32, requires_grad=True)
    torch.manual_seed(3)
    y = m._dropout(x)
    kept = y != 0
    frac = float(kept.double().mean())
    n = x.numel()
    assert abs(frac - 0.7) < 4 * math.sqrt(0.21 / n)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    (g,) = torch.autograd.grad((y * 2).sum(), x)
    torch.testing.assert_close(g, torch.where(kept, 2 / 0.7, 0.0))
    # independent per value: neighbouring keep decisions are uncorrelated
    k = kept.flatten().double()
    assert abs(float(torch.corrcoef(torch.stack([k[:-1], k[1:]]))[0, 1])) < 0.05
    torch.manual_seed(3)
    assert torch.equal(m._dropout(x), y)  # the global RNG drives it, as nn.Dropout
    m.eval()
    assert torch.equal(m._dropout(x), x)
    assert torch.equal(make(dropout=0.0).train()._dropout(x), x)
