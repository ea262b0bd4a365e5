"""prior_attention, PriorMultiheadAttention and the Speech-Transformer blocks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.priors_reference import attention_ref
from speechattn.functional import (
    BetaBinomialPrior,
    DiagonalPrior,
    beta_binomial_bias,
    diagonal_bias,
    prior_attention,
)
from speechattn.nn import (
    Conv2dSubsampling,
    PriorMultiheadAttention,
    SpeechTransformerDecoderLayer,
    SpeechTransformerEncoder,
    SpeechTransformerEncoderLayer,
)


def _t(x: list[int]) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.int64)


CASES = [  # (query_lengths, key_lengths, Tq, Tk)
    ([4, 4], [4, 4], 4, 4),
    ([3, 2], [6, 4], 3, 6),
    ([5, 1, 3], [2, 4, 0], 5, 4),
]


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_prior_attention_matches_loop_oracle(case, causal, need_weights) -> None:
    lq, lk, tq, tk = case
    torch.manual_seed(0)
    b = len(lq)
    q = torch.randn(b, 2, tq, 3, dtype=torch.float64)
    k = torch.randn(b, 2, tk, 3, dtype=torch.float64)
    v = torch.randn(b, 2, tk, 5, dtype=torch.float64)
    bias = diagonal_bias(
        _t(lq),
        _t(lk),
        kind="gaussian",
        sigma=0.3,
        slopes=[1.0, 0.5],
        max_query_len=tq,
        max_key_len=tk,
        dtype=torch.float64,
    )
    res = prior_attention(
        q,
        k,
        v,
        bias=bias,
        query_lengths=_t(lq),
        key_lengths=_t(lk),
        causal=causal,
        need_weights=need_weights,
    )
    out_ref, w_ref = attention_ref(q, k, v, bias, lq, lk, causal)
    torch.testing.assert_close(res.output, out_ref)
    if need_weights:
        assert res.attn_weights is not None
        torch.testing.assert_close(res.attn_weights, w_ref)
    else:
        assert res.attn_weights is None


@pytest.mark.parametrize("need_weights", [False, True])
def test_prior_attention_gradcheck(need_weights) -> None:
    torch.manual_seed(1)
    lq, lk = _t([3, 2]), _t([3, 1])
    q = torch.randn(2, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, bias):
        return prior_attention(
            q, k, v, bias=bias, query_lengths=lq, key_lengths=lk, need_weights=need_weights
        ).output

    assert torch.autograd.gradcheck(fn, (q, k, v, bias))


@pytest.mark.parametrize("causal", [False, True])
def test_bias_masked_shortcut_is_equivalent(causal) -> None:
    torch.manual_seed(4)
    lq, lk = _t([5, 2, 0]), _t([3, 6, 4])
    q, k, v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4)
    for bias in (
        diagonal_bias(lq, lk, kind="band", width=0.2, scale=4.0),
        beta_binomial_bias(lk, lq, max_mel_len=5, max_text_len=6),
    ):
        fast = prior_attention(
            q, k, v, bias=bias, query_lengths=lq, key_lengths=lk, causal=causal, bias_masked=True
        )
        slow = prior_attention(q, k, v, bias=bias, query_lengths=lq, key_lengths=lk, causal=causal)
        torch.testing.assert_close(fast.output, slow.output)


def test_prior_attention_errors() -> None:
    q = torch.randn(2, 2, 3, 4)
    k = torch.randn(2, 2, 5, 4)
    with pytest.raises(ValueError, match=r"key \(B=2, H=2, Tk, D=4\)"):
        prior_attention(q, torch.randn(2, 2, 5, 3), k)
    with pytest.raises(ValueError, match=r"bias broadcastable as .*found \(2, 1, 3, 4\)"):
        prior_attention(q, k, k, bias=torch.zeros(2, 1, 3, 4))
    with pytest.raises(ValueError, match=r"key_lengths\[1\] = 6"):
        prior_attention(q, k, k, key_lengths=_t([5, 6]))
    with pytest.raises(TypeError, match="one dtype"):
        prior_attention(q, k.double(), k)


# --------------------------------------------------------------------------- module


def _mha(prior=None, **kw) -> PriorMultiheadAttention:
    torch.manual_seed(0)
    return PriorMultiheadAttention(embed_dim=8, num_heads=2, prior=prior, **kw).eval()


@pytest.mark.parametrize(
    "prior", [None, DiagonalPrior(kind="linear", scale=3.0), BetaBinomialPrior()]
)
def test_module_padding_batch_independence_and_paths_agree(prior) -> None:
    mha = _mha(prior)
    lq, lk = _t([6, 3, 5]), _t([4, 7, 2])
    x = torch.randn(3, 6, 8)
    y = torch.randn(3, 7, 8)
    full = mha(x, y, query_lengths=lq, key_lengths=lk, need_weights=True)
    fast = mha(x, y, query_lengths=lq, key_lengths=lk)
    torch.testing.assert_close(fast.output, full.output, rtol=1e-5, atol=1e-5)
    w = full.attn_weights
    assert w is not None and w.shape == (3, 2, 6, 7) and w.dtype == torch.float32
    # Padded rows are 0, padded keys carry exactly 0 weight, valid rows sum to 1.
    assert (full.output[1, 3:] == 0).all() and (w[1, :, 3:] == 0).all()
    assert (w[0, :, :, 4:] == 0).all() and (w[2, :, :, 2:] == 0).all()
    torch.testing.assert_close(w[2, :, :5].sum(-1), torch.ones(2, 5))
    # Padding content (even NaN) changes nothing; an item alone == the item in the batch.
    x_dirty, y_dirty = x.clone(), y.clone()
    x_dirty[1, 3:] = float("nan")
    y_dirty[0, 4:] = float("inf")
    dirty = mha(x_dirty, y_dirty, query_lengths=lq, key_lengths=lk)
    torch.testing.assert_close(dirty.output, fast.output)
    for b in range(3):
        alone = mha(
            x[b : b + 1, : lq[b]],
            y[b : b + 1, : lk[b]],
            query_lengths=lq[b : b + 1],
            key_lengths=lk[b : b + 1],
        )
        torch.testing.assert_close(alone.output[0], fast.output[b, : lq[b]], rtol=1e-5, atol=1e-5)


def test_module_prior_changes_the_weights_toward_the_diagonal() -> None:
    lq, lk = _t([8]), _t([16])
    x, y = torch.randn(1, 8, 8), torch.randn(1, 16, 8)
    plain = _mha()(x, y, query_lengths=lq, key_lengths=lk, need_weights=True).attn_weights
    prior = DiagonalPrior(kind="gaussian", sigma=0.05, scale=1.0)
    biased = _mha(prior)(x, y, query_lengths=lq, key_lengths=lk, need_weights=True).attn_weights
    assert plain is not None and biased is not None
    diag = torch.arange(8) * 2  # item's own diagonal j = i * Lk / Lq
    assert (biased[0].argmax(-1) - diag).abs().le(1).all()
    # Expected distance from the diagonal shrinks a lot with the prior.
    j = torch.arange(16.0)

    def spread(w: torch.Tensor) -> float:
        return float((w.detach()[0] * (j - diag[:, None]).abs()).sum(-1).mean())

    assert spread(biased) < 0.5 * spread(plain)
    # A forward() prior tensor overrides the module's prior.
    bias = diagonal_bias(lq, lk, kind="gaussian", sigma=0.05)
    again = _mha()(
        x, y, query_lengths=lq, key_lengths=lk, prior=bias, need_weights=True
    ).attn_weights
    torch.testing.assert_close(again, biased)


def test_module_beta_binomial_prior_matches_bias_tensor() -> None:
    mel_l, text_l = _t([9, 6]), _t([4, 2])
    mel, text = torch.randn(2, 9, 8), torch.randn(2, 4, 8)
    via_cfg = _mha(BetaBinomialPrior(scaling=0.5))(
        mel, text, query_lengths=mel_l, key_lengths=text_l
    )
    bias = beta_binomial_bias(text_l, mel_l, scaling=0.5)
    via_tensor = _mha()(mel, text, query_lengths=mel_l, key_lengths=text_l, prior=bias)
    torch.testing.assert_close(via_cfg.output, via_tensor.output)


@settings(max_examples=20, deadline=None)
@given(
    lens=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=3),
    causal=st.booleans(),
    need_weights=st.booleans(),
)
def test_module_never_nan_for_any_lengths(lens, causal, need_weights) -> None:
    mha = _mha(DiagonalPrior(kind="band", width=0.1, scale=5.0))
    lq, lk = _t([a for a, _ in lens]), _t([b for _, b in lens])
    tq, tk = max(1, int(lq.max())), max(1, int(lk.max()))
    x = torch.randn(len(lens), tq, 8, requires_grad=True)
    y = torch.randn(len(lens), tk, 8)
    out = mha(x, y, query_lengths=lq, key_lengths=lk, causal=causal, need_weights=need_weights)
    assert torch.isfinite(out.output).all()
    out.output.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for b in range(len(lens)):
        if lk[b] == 0:
            assert (out.output[b] == 0).all()


def test_module_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        PriorMultiheadAttention(embed_dim=10, num_heads=3)
    with pytest.raises(TypeError, match="prior"):
        PriorMultiheadAttention(embed_dim=8, num_heads=2, prior="diagonal")  # type: ignore[arg-type]
    mha = _mha()
    with pytest.raises(ValueError, match=r"Expected query \(B, T, 8\); found \(2, 3, 5\)"):
        mha(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"query_lengths\[0\] = 4"):
        mha(torch.randn(2, 3, 8), query_lengths=_t([4, 1]))
    with pytest.raises(ValueError, match=r"bias broadcastable as .*H=2 or 1.*found \(1, 3, 3, 3\)"):
        mha(torch.randn(1, 3, 8), prior=DiagonalPrior(slopes=(1.0, 2.0, 3.0)))  # 3 slopes, 2 heads


# --------------------------------------------------------------------------- Speech-Transformer


def test_conv_subsampling_lengths_and_padding_invariance() -> None:
    torch.manual_seed(0)
    front = Conv2dSubsampling(in_features=20, embed_dim=16, channels=4)
    lengths = _t([40, 23, 7, 5])
    x = torch.randn(4, 40, 20)
    y, out_l = front(x, lengths)
    want = [((((n - 3) // 2 + 1) - 3) // 2 + 1) if n >= 7 else 0 for n in lengths.tolist()]
    assert out_l.tolist() == want and y.shape == (4, Conv2dSubsampling.output_length(40), 16)
    x2 = x.clone()
    x2[1, 23:] = float("nan")
    y2, _ = front(x2, lengths)
    torch.testing.assert_close(y2, y)
    assert (y[1, want[1] :] == 0).all() and (y[3] == 0).all()
    with pytest.raises(ValueError, match="at least 7 frames"):
        front(torch.randn(1, 6, 20))


def test_encoder_layer_uses_the_prior_and_decoder_self_attention_does_not() -> None:
    prior = DiagonalPrior(kind="linear", distance="absolute", scale=2.0)
    enc = SpeechTransformerEncoderLayer(
        embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0, prior=prior
    )
    dec = SpeechTransformerDecoderLayer(
        embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0, prior=prior
    )
    assert enc.self_attn.prior is prior
    assert dec.self_attn.prior is None and dec.cross_attn.prior is prior
    x = torch.randn(2, 6, 8)
    lengths = _t([6, 4])
    with_prior = enc(x, lengths, need_weights=True)
    enc.self_attn.prior = None
    without = enc(x, lengths, need_weights=True)
    assert not torch.allclose(with_prior.output, without.output)
    assert with_prior.attn_weights is not None and (with_prior.attn_weights[1, :, :, 4:] == 0).all()
    assert (with_prior.output[1, 4:] == 0).all()


def test_decoder_layer_is_causal_and_padding_invariant() -> None:
    torch.manual_seed(0)
    dec = SpeechTransformerDecoderLayer(
        embed_dim=8, num_heads=2, ffn_dim=16, dropout=0.0, prior=DiagonalPrior(scale=2.0)
    ).eval()
    tokens, memory = torch.randn(2, 5, 8), torch.randn(2, 9, 8)
    tl, ml = _t([5, 3]), _t([9, 6])
    out = dec(tokens, memory, x_lengths=tl, memory_lengths=ml, need_weights=True)
    changed = tokens.clone()
    changed[:, 3:] = torch.randn(2, 2, 8)  # future tokens: earlier outputs must not move
    out2 = dec(changed, memory, x_lengths=tl, memory_lengths=ml)
    torch.testing.assert_close(out2.output[:, :3], out.output[:, :3])
    assert out.self_attn_weights is not None and out.cross_attn_weights is not None
    assert torch.triu(out.self_attn_weights[0, 0], 1).abs().max() == 0
    assert (out.cross_attn_weights[1, :, :3, 6:] == 0).all()
    dirty = memory.clone()
    dirty[1, 6:] = float("nan")
    out3 = dec(tokens, dirty, x_lengths=tl, memory_lengths=ml)
    torch.testing.assert_close(out3.output, out.output)


def test_encoder_stack_runs_forward_and_backward() -> None:
    torch.manual_seed(0)
    enc = SpeechTransformerEncoder(
        in_features=16, embed_dim=16, num_heads=2, ffn_dim=32, num_layers=2, channels=4
    )
    feats = torch.randn(2, 30, 16, requires_grad=True)
    out = enc(feats, _t([30, 17]))
    assert out.lengths.tolist() == [6, 3] and out.output.shape == (2, 6, 16)
    assert (out.output[1, 3:] == 0).all()
    out.output.sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert (feats.grad[1, 17:] == 0).all()


def test_device_bias_and_module_match_cpu(device) -> None:
    lq, lk = _t([5, 3]), _t([7, 2])
    for kind in ("linear", "gaussian", "band"):
        want = diagonal_bias(lq, lk, kind=kind, width=0.1)
        got = diagonal_bias(lq.to(device), lk.to(device), kind=kind, width=0.1)
        assert got.device.type == device.type
        torch.testing.assert_close(got.cpu(), want)
    mha = _mha(DiagonalPrior(kind="gaussian", sigma=0.3))
    x, y = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    want_out = mha(x, y, query_lengths=lq, key_lengths=lk).output
    mha_dev = mha.to(device)
    got_out = mha_dev(
        x.to(device), y.to(device), query_lengths=lq.to(device), key_lengths=lk.to(device)
    ).output
    torch.testing.assert_close(got_out.cpu(), want_out, rtol=1e-4, atol=1e-4)


def test_decoder_stack_causal_padding_and_gradients() -> None:
    torch.manual_seed(0)
    from speechattn.nn import SpeechTransformerDecoder

    dec = SpeechTransformerDecoder(
        vocab_size=11, embed_dim=16, num_heads=2, ffn_dim=32, num_layers=2, dropout=0.0
    ).eval()
    assert all(layer.self_attn.prior is None for layer in dec.layers)
    assert all(layer.cross_attn.prior is not None for layer in dec.layers)
    tokens = torch.randint(0, 11, (2, 6))
    memory = torch.randn(2, 9, 16, requires_grad=True)
    tl, ml = _t([6, 4]), _t([9, 5])
    logits = dec(tokens, memory, token_lengths=tl, memory_lengths=ml)
    assert logits.shape == (2, 6, 11) and (logits[1, 4:] == 0).all()
    later = tokens.clone()
    later[:, 4:] = (later[:, 4:] + 1) % 11  # future tokens do not change earlier logits
    torch.testing.assert_close(
        dec(later, memory, token_lengths=tl, memory_lengths=ml)[:, :4], logits[:, :4]
    )
    logits.sum().backward()
    assert memory.grad is not None and (memory.grad[1, 5:] == 0).all()
    with pytest.raises(ValueError, match="tokens int64"):
        dec(tokens.float(), memory)


def test_low_precision_weights_are_float32_and_close() -> None:
    mha = _mha(DiagonalPrior(kind="gaussian", sigma=0.3))
    lq, lk = _t([5, 3]), _t([7, 2])
    x, y = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    ref = mha(x, y, query_lengths=lq, key_lengths=lk, need_weights=True)
    low = mha.to(torch.bfloat16)(
        x.bfloat16(), y.bfloat16(), query_lengths=lq, key_lengths=lk, need_weights=True
    )
    fast = mha(x.bfloat16(), y.bfloat16(), query_lengths=lq, key_lengths=lk)
    assert low.attn_weights is not None and low.attn_weights.dtype == torch.float32
    assert ref.attn_weights is not None
    torch.testing.assert_close(low.attn_weights, ref.attn_weights, rtol=0, atol=3e-2)
    torch.testing.assert_close(fast.output.float(), low.output.float(), rtol=0, atol=5e-2)
    assert (low.attn_weights[1, :, :, 2:] == 0).all() and (fast.output[1, 3:] == 0).all()


@pytest.mark.slow
def test_bench_priors_quick_runs(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_priors.py"
    out = tmp_path / "b.json"
    res = subprocess.run(
        [sys.executable, str(script), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["bias_build_ms"] > 0 for r in rows)


def test_decoder_memory_with_another_batch_is_a_clear_error() -> None:
    from speechattn.nn import SpeechTransformerDecoder, SpeechTransformerDecoderLayer

    layer = SpeechTransformerDecoderLayer(embed_dim=8, num_heads=2, ffn_dim=16)
    with pytest.raises(ValueError, match=r"memory \(B=2, T, d=8\).*found \(3, 4, 8\)"):
        layer(torch.randn(2, 3, 8), torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match=r"d=8.*found \(2, 4, 6\)"):
        layer(torch.randn(2, 3, 8), torch.randn(2, 4, 6))
    dec = SpeechTransformerDecoder(vocab_size=5, embed_dim=8, num_heads=2, ffn_dim=16, num_layers=1)
    with pytest.raises(ValueError, match=r"batch of tokens"):
        dec(torch.zeros(2, 3, dtype=torch.long), torch.randn(1, 4, 8))
    assert dec(torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 4, 8)).shape == (2, 3, 5)
