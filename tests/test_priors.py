"""Diagonal priors: biases, flex score_mod, the seed's post-softmax variant, losses, beta-binomial."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.priors_reference import (
    beta_binomial_prior_ref,
    betabinom_pmf,
    diagonal_bias_ref,
    guided_attention_loss_ref,
    seed_penalty_loop,
    seed_post_softmax_ref,
)
from speechattn.functional import (
    BetaBinomialPrior,
    DiagonalPrior,
    beta_binomial_bias,
    beta_binomial_prior,
    diagonal_bias,
    diagonal_score_mod,
    guided_attention_loss,
    post_softmax_penalty_attention,
    seed_attention_penalty,
)

F64_MIN = torch.finfo(torch.float64).min

# (query_lengths, key_lengths, Tq, Tk): square, non-square, ragged, zero-length items.
CASES = [
    ([5, 5], [5, 5], 5, 5),
    ([4, 2], [7, 3], 4, 7),
    ([6, 1, 3], [2, 5, 4], 6, 5),
    ([3, 0, 2], [4, 2, 0], 3, 4),
]


def _t(x: list[int]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.int64)


def _cmp_bias(ours: torch.Tensor, ref: torch.Tensor) -> None:
    ref_filled = torch.where(torch.isinf(ref), torch.full_like(ref, F64_MIN), ref)
    torch.testing.assert_close(ours, ref_filled, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- diagonal_bias


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("kind", "distance", "width", "sigma"),
    [
        ("linear", "relative", 0.0, 0.4),
        ("linear", "relative", 0.1, 0.4),
        ("linear", "absolute", 1.0, 0.4),
        ("gaussian", "relative", 0.0, 0.3),
        ("gaussian", "absolute", 0.0, 2.0),
        ("band", "relative", 0.25, 0.4),  # width off the grid of i/L
        ("band", "absolute", 1.0, 0.4),
    ],
)
def test_diagonal_bias_matches_loop_oracle(case, kind, distance, width, sigma) -> None:
    lq, lk, tq, tk = case
    ours = diagonal_bias(
        _t(lq),
        _t(lk),
        kind=kind,
        scale=1.7,
        width=width,
        sigma=sigma,
        distance=distance,
        max_query_len=tq,
        max_key_len=tk,
        dtype=torch.float64,
    )
    assert ours.shape == (len(lq), 1, tq, tk)
    ref = diagonal_bias_ref(
        lq, lk, tq, tk, kind=kind, scale=1.7, width=width, sigma=sigma, distance=distance
    )
    _cmp_bias(ours, ref)


@pytest.mark.parametrize("case", CASES[1:3])
def test_diagonal_bias_per_head_slopes(case) -> None:
    lq, lk, tq, tk = case
    slopes = [0.5, 1.0, 2.0]
    ours = diagonal_bias(
        _t(lq), _t(lk), kind="linear", scale=0.8, slopes=slopes, dtype=torch.float64
    )
    assert ours.shape == (len(lq), 3, tq, tk)
    ref = diagonal_bias_ref(
        lq,
        lk,
        tq,
        tk,
        kind="linear",
        scale=0.8,
        width=0.0,
        sigma=0.4,
        distance="relative",
        slopes=slopes,
    )
    _cmp_bias(ours, ref)


def test_diagonal_bias_gradcheck_slopes() -> None:
    slopes = torch.tensor([0.3, 1.2], dtype=torch.float64, requires_grad=True)

    def fn(s: torch.Tensor) -> torch.Tensor:
        bias = diagonal_bias(_t([3, 2]), _t([4, 2]), kind="gaussian", slopes=s, dtype=torch.float64)
        return torch.where(bias > F64_MIN, bias, torch.zeros_like(bias))  # drop the fill constant

    assert torch.autograd.gradcheck(fn, (slopes,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_padding_polarity_and_fill(dtype) -> None:
    bias = diagonal_bias(_t([3, 1]), _t([2, 4]), max_query_len=4, dtype=dtype)
    fmin = torch.finfo(dtype).min
    assert bias.dtype == dtype and bias.shape == (2, 1, 4, 4)
    assert (bias[0, 0, :3, 2:] == fmin).all() and (bias[0, 0, :3, :2] > fmin).all()
    assert (bias[0, 0, 3] == 0).all()  # padded query row: zero bias
    assert (bias[1, 0, 1:] == 0).all()
    assert torch.isfinite(bias).all()


def test_zero_length_items_never_fully_masked() -> None:
    bias = diagonal_bias(_t([0, 2, 3]), _t([3, 0, 2]), dtype=torch.float32)
    fmin = torch.finfo(torch.float32).min
    assert ((bias > fmin).any(-1)).all(), "a row is fully masked"
    assert (bias[1] == 0).all()  # no valid key: every row zero bias


@settings(max_examples=25, deadline=None)
@given(
    lens=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=4),
    kind=st.sampled_from(["linear", "gaussian", "band"]),
    distance=st.sampled_from(["relative", "absolute"]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_sdpa_with_bias_never_nan_and_zero_weight_on_padded_keys(lens, kind, distance, dtype):
    lq = _t([a for a, _ in lens])
    lk = _t([b for _, b in lens])
    tq, tk = max(1, int(lq.max())), max(1, int(lk.max()))
    bias = diagonal_bias(
        lq,
        lk,
        kind=kind,
        distance=distance,
        scale=3.0,
        max_query_len=tq,
        max_key_len=tk,
        dtype=dtype,
    )
    q = torch.randn(len(lens), 2, tq, 4, dtype=dtype)
    k = torch.randn(len(lens), 2, tk, 4, dtype=dtype)
    out = F.scaled_dot_product_attention(q, k, torch.randn_like(k), attn_mask=bias)
    assert not torch.isnan(out).any()
    w = torch.softmax(q.float() @ k.float().transpose(-1, -2) / 2.0 + bias.float(), dim=-1)
    assert not torch.isnan(w).any()
    for b in range(len(lens)):
        if lk[b] > 0:
            assert (w[b, :, : lq[b], lk[b] :] == 0).all()


def test_item_bias_does_not_depend_on_the_batch() -> None:
    lq, lk = _t([4, 9, 2]), _t([6, 3, 8])
    batch = diagonal_bias(lq, lk, kind="gaussian", sigma=0.3)
    for b in range(3):
        alone = diagonal_bias(lq[b : b + 1], lk[b : b + 1], kind="gaussian", sigma=0.3)
        torch.testing.assert_close(batch[b, :, : lq[b], : lk[b]], alone[0, :, : lq[b], : lk[b]])


def test_relative_distance_follows_each_items_diagonal_for_non_square() -> None:
    # 3 queries over 9 keys: query i's zero-penalty key is j = 3 i (the item's own diagonal).
    bias = diagonal_bias(_t([3]), _t([9]), kind="linear")
    assert bias[0, 0].argmax(-1).tolist() == [0, 3, 6]
    # The seed's band is anchored at the top-left corner instead: its "diagonal" is j = i.
    assert seed_attention_penalty(3, 9)[0, 0].argmax(-1).tolist() == [0, 1, 2]


def test_absolute_linear_equals_the_seed_penalty() -> None:
    for w in (1, 2, 4):
        seed = seed_attention_penalty(6, width=w, dtype=torch.float64)[0, 0]
        ours = diagonal_bias(
            None,
            None,
            kind="linear",
            distance="absolute",
            width=w - 1,
            max_query_len=6,
            max_key_len=6,
            dtype=torch.float64,
        )[0, 0]
        torch.testing.assert_close(ours, seed)


def test_bias_errors_name_the_argument() -> None:
    lq, lk = _t([2]), _t([3])
    with pytest.raises(ValueError, match="kind"):
        diagonal_bias(lq, lk, kind="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distance"):
        diagonal_bias(lq, lk, distance="frames")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        diagonal_bias(lq, lk, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        diagonal_bias(lq, lk, scale=math.inf)
    with pytest.raises(ValueError, match="sigma"):
        diagonal_bias(lq, lk, kind="gaussian", sigma=0.0)
    with pytest.raises(TypeError, match="integer"):
        diagonal_bias(torch.tensor([2.0]), lk)
    with pytest.raises(ValueError, match=r"key_lengths\[0\] = 3"):
        diagonal_bias(lq, lk, max_key_len=2)
    with pytest.raises(ValueError, match=r"slopes of shape \(H,\)"):
        diagonal_bias(lq, lk, slopes=torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        diagonal_bias(lq, _t([3, 3]))
    with pytest.raises(TypeError, match="dtype"):
        diagonal_bias(lq, lk, dtype=torch.int32)
    with pytest.raises(ValueError, match="max_key_len"):
        diagonal_bias(lq, None)
    with pytest.raises(ValueError, match="sigma"):
        DiagonalPrior(kind="gaussian", sigma=-1.0)


# --------------------------------------------------------------------------- flex_attention


def _flex():
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:  # pragma: no cover - torch < 2.5
        pytest.skip("torch.nn.attention.flex_attention is not available")
    return flex_attention


@pytest.mark.parametrize("distance", ["relative", "absolute"])
def test_score_mod_matches_bias_forward(distance) -> None:
    flex_attention = _flex()
    torch.manual_seed(0)
    lq, lk = _t([5, 3]), _t([8, 4])
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    kw = {"kind": "gaussian", "sigma": 0.5, "distance": distance, "slopes": [1.0, 2.0]}
    bias = diagonal_bias(lq, lk, **kw)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = flex_attention(q, k, v, score_mod=diagonal_score_mod(lq, lk, **kw))
    for b in range(2):  # padded query rows are the caller's to zero; compare valid rows
        torch.testing.assert_close(got[b, :, : lq[b]], want[b, :, : lq[b]], rtol=1e-5, atol=1e-5)


def test_flex_attention_is_forward_only_on_cpu() -> None:
    flex_attention = _flex()
    lq, lk = _t([4]), _t([4])
    q = torch.randn(1, 1, 4, 8, requires_grad=True)
    k, v = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    sm = diagonal_score_mod(lq, lk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = flex_attention(q, k, v, score_mod=sm)
        except NotImplementedError as err:  # torch 2.13: documented forward-only on CPU
            assert "backward on CPU" in str(err)
            return
    # A later torch that supports it must give SDPA's gradient.
    out.sum().backward()
    q2 = q.detach().clone().requires_grad_(True)
    F.scaled_dot_product_attention(q2, k, v, attn_mask=diagonal_bias(lq, lk)).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the seed's variant


def test_seed_penalty_vectorised_equals_loop() -> None:
    for tq, tk, w in ((5, 5, 1), (5, 5, 3), (3, 7, 2), (6, 2, 1)):
        ours = seed_attention_penalty(
            tq, tk, width=w, batch_size=2, num_heads=3, dtype=torch.float64
        )
        assert ours.shape == (2, 3, tq, tk)
        torch.testing.assert_close(ours[1, 2], seed_penalty_loop(tq, tk, w))


def test_post_softmax_matches_oracle_and_shows_its_defects() -> None:
    torch.manual_seed(1)
    lk = [5, 3]
    scores = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    pen = seed_attention_penalty(4, 5, width=2, batch_size=2, num_heads=2, dtype=torch.float64)
    valid = torch.arange(5) < _t(lk)[:, None]
    w = post_softmax_penalty_attention(scores, pen, scale=0.3, key_valid_mask=valid)
    torch.testing.assert_close(w, seed_post_softmax_ref(scores, pen, 0.3, lk))
    # Defect 1: padded keys of item 1 get weight (every row puts > 1% on them).
    assert (w[1, :, :, 3:].sum(-1) > 1e-2).all()
    # Defect 2: item 0's weights change when item 1 changes (batch-wide minimum).
    w_alone = post_softmax_penalty_attention(
        scores[:1], pen[:1], scale=0.3, key_valid_mask=valid[:1]
    )
    assert not torch.allclose(w[0], w_alone[0])
    # Ours: item 0 alone == item 0 in the batch, and padded keys get exactly 0.
    bias = diagonal_bias(_t([4, 4]), _t(lk), distance="absolute", width=1.0, dtype=torch.float64)
    ours = torch.softmax(scores + bias, dim=-1)
    ours_alone = torch.softmax(scores[:1] + bias[:1, :, :, :], dim=-1)
    torch.testing.assert_close(ours[0], ours_alone[0])
    assert (ours[1, :, :, 3:] == 0).all()


def test_multiplicative_post_softmax_factor_equals_log_bias() -> None:
    torch.manual_seed(2)
    z = torch.randn(3, 2, 4, 6, dtype=torch.float64)
    f = torch.rand(3, 1, 4, 6, dtype=torch.float64) + 0.05  # any positive factor
    post = torch.softmax(z, -1) * f
    post = post / post.sum(-1, keepdim=True)
    torch.testing.assert_close(post, torch.softmax(z + f.log(), -1))
    # ... and the seed's additive post-softmax penalty is not such a reweighting.
    pen = seed_attention_penalty(4, 6, width=1, batch_size=3, num_heads=2, dtype=torch.float64)
    seed = post_softmax_penalty_attention(z, pen, scale=0.5)
    implied_factor = seed / torch.softmax(z, -1)
    assert not torch.allclose(implied_factor[0, 0], implied_factor[1, 0])  # depends on content


# --------------------------------------------------------------------------- guided attention


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("heads", [None, 3])
def test_guided_attention_loss_matches_oracle(case, heads) -> None:
    lq, lk, tq, tk = case
    torch.manual_seed(3)
    shape = (len(lq), tq, tk) if heads is None else (len(lq), heads, tq, tk)
    attn = torch.rand(*shape, dtype=torch.float64)
    got = guided_attention_loss(attn, _t(lq), _t(lk), sigma=0.3)
    assert got.dim() == 0
    assert math.isclose(float(got), guided_attention_loss_ref(attn, lq, lk, 0.3), rel_tol=1e-12)


def test_guided_attention_loss_ignores_padding_content_and_has_gradients() -> None:
    lq, lk = _t([3, 2]), _t([4, 1])
    attn = torch.rand(2, 3, 4, dtype=torch.float64)
    dirty = attn.clone()
    dirty[1, 2:] = float("nan")
    dirty[1, :, 1:] = float("inf")
    assert guided_attention_loss(dirty, lq, lk) == guided_attention_loss(attn, lq, lk)
    a = attn.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: guided_attention_loss(x, lq, lk), (a,))
    zero = guided_attention_loss(attn, _t([0, 0]), lk)
    assert float(zero) == 0.0


def test_guided_attention_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"\(B, Tq, Tk\)"):
        guided_attention_loss(torch.rand(3, 4), None, None)
    with pytest.raises(ValueError, match=r"query_lengths\[1\] = 9"):
        guided_attention_loss(torch.rand(2, 4, 5), _t([2, 9]), None)
    with pytest.raises(ValueError, match="sigma"):
        guided_attention_loss(torch.rand(2, 4, 5), None, None, sigma=0.0)


# --------------------------------------------------------------------------- beta-binomial


@pytest.mark.parametrize(
    ("text", "mel", "scaling"),
    [([4], [10], 1.0), ([3, 6, 1], [7, 12, 3], 0.05), ([5, 2], [5, 9], 2.0), ([0, 3], [4, 0], 1.0)],
)
def test_beta_binomial_matches_oracle_and_rows_sum_to_one(text, mel, scaling) -> None:
    tu, tt = max(text), max(mel)
    ours = beta_binomial_prior(_t(text), _t(mel), scaling=scaling, dtype=torch.float64)
    assert ours.shape == (len(text), tt, tu)
    ref = beta_binomial_prior_ref(text, mel, tu, tt, scaling, n_offset=-1)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for b, (u, t) in enumerate(zip(text, mel)):
        sums = ours[b].sum(-1)
        want = 1.0 if u > 0 else 0.0
        torch.testing.assert_close(sums[:t], torch.full((t,), want, dtype=torch.float64))
        assert (sums[t:] == 0).all()


def test_nemo_layout_drops_last_bin_mass_and_ours_does_not() -> None:
    nemo = beta_binomial_prior_ref([5], [8], 5, 8, 1.0, n_offset=0)  # n = U, pmf on 0..U-1
    assert (nemo[0].sum(-1) < 1 - 1e-4).all()  # the k = U bin's mass is lost
    ours = beta_binomial_prior(_t([5]), _t([8]), dtype=torch.float64)
    torch.testing.assert_close(ours[0].sum(-1), torch.ones(8, dtype=torch.float64))
    scipy_stats = pytest.importorskip("scipy.stats")
    for t in range(8):
        i = t + 1
        want = scipy_stats.betabinom(4, i, 8 + 1 - i).pmf(range(5))
        torch.testing.assert_close(ours[0, t], torch.as_tensor(want, dtype=torch.float64))
    assert math.isclose(
        betabinom_pmf(2, 4, 1.5, 2.5), float(scipy_stats.betabinom(4, 1.5, 2.5).pmf(2))
    )


def test_beta_binomial_bias_is_the_log_prior_and_stays_finite() -> None:
    text, mel = _t([4, 2]), _t([9, 5])
    probs = beta_binomial_prior(text, mel, dtype=torch.float64)
    bias = beta_binomial_bias(text, mel, dtype=torch.float64)
    assert bias.shape == (2, 1, 9, 4)
    fmin = torch.finfo(torch.float64).min
    valid = probs > 0
    torch.testing.assert_close(bias[:, 0][valid], probs[valid].log())
    assert (bias[1, 0, :5, 2:] == fmin).all() and (bias[1, 0, 5:] == 0).all()
    # Applying it to logits == multiplying the softmax by P and renormalising.
    z = torch.randn(2, 1, 9, 4, dtype=torch.float64)
    post = torch.softmax(z + bias, -1)
    mult = torch.softmax(z.masked_fill(~valid[:, None], -math.inf), -1) * probs[:, None]
    mult = mult / mult.sum(-1, keepdim=True)
    torch.testing.assert_close(post[0], mult[0])
    torch.testing.assert_close(post[1, :, :5], mult[1, :, :5])
    # Long utterances: P underflows in float32, the log-space bias does not.
    big = beta_binomial_bias(_t([150]), _t([1500]), scaling=1.0)
    assert torch.isfinite(big).all() and (big > torch.finfo(torch.float32).min).all()
    cfg = BetaBinomialPrior(scaling=1.0).bias(
        mel, text, max_query_len=9, max_key_len=4, dtype=torch.float64
    )
    torch.testing.assert_close(cfg, bias)


def test_beta_binomial_errors() -> None:
    with pytest.raises(ValueError, match="scaling"):
        beta_binomial_prior(_t([3]), _t([4]), scaling=0.0)
    with pytest.raises(ValueError, match=r"text_lengths of shape \(2,\)"):
        beta_binomial_prior(_t([3]), _t([4, 5]))
    with pytest.raises(TypeError, match="text_lengths"):
        beta_binomial_prior([3], _t([4]))  # type: ignore[arg-type]
