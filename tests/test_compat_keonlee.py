"""speechattn.compat.keonlee against the reference layer's own operations (the benchmark
baseline), and that baseline against the float64 equation oracle."""

from __future__ import annotations

import math

import pytest
import torch

from reference.keonlee_reference import ReferenceSMA, reference_recurrence
from reference.sma_reference import sma_reference_tensor
from speechattn.compat.keonlee import StepwiseMonotonicMultiheadAttention

D_MODEL, N_HEAD = 24, 3
D_K = D_V = D_MODEL // N_HEAD


def pair(tunable: bool, dtype: torch.dtype = torch.float32, seed: int = 0, dropout: float = 0.1):
    torch.manual_seed(seed)
    ref = ReferenceSMA(D_MODEL, D_K, D_V, n_head=N_HEAD, dropout=dropout, is_tunable=tunable)
    ours = StepwiseMonotonicMultiheadAttention(
        D_MODEL, D_K, D_V, n_head=N_HEAD, dropout=dropout, is_tunable=tunable
    )
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.to(dtype), ours.to(dtype)


def inputs(dtype: torch.dtype = torch.float32, b: int = 4, u: int = 7, t: int = 23, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(b, u, D_MODEL, generator=g).to(dtype)
    mel = torch.randn(b, t, D_MODEL, generator=g).to(dtype)
    text_len = torch.tensor([u, 5, 2, 1][:b])
    mel_len = torch.tensor([t, 19, 8, 3][:b])
    tok_pad = torch.arange(u)[None] >= text_len[:, None]  # True = padded
    frm_pad = torch.arange(t)[None] >= mel_len[:, None]
    mask = tok_pad[:, :, None] | frm_pad[:, None, :]  # (b, u, t), True = masked
    query_mask = tok_pad[:, :, None]  # (b, u, 1)
    return text, mel, mel_len, mask, query_mask


def test_state_dict_names_and_strict_load_both_ways() -> None:
    ref, ours = pair(True)
    assert list(ref.state_dict()) == list(ours.state_dict())
    expected = {
        f"{m}.{p}"
        for m in ("energy.w_qs", "energy.w_ks", "energy.w_vs", "last_layer", "layer_norm")
        for p in ("weight", "bias")
    }
    assert set(ours.state_dict()) == expected
    ref2 = ReferenceSMA(D_MODEL, D_K, D_V, n_head=N_HEAD)
    ref2.load_state_dict(ours.state_dict(), strict=True)
    for key, val in ours.state_dict().items():
        assert torch.equal(val, ref.state_dict()[key])


@pytest.mark.parametrize("tunable", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [True, False])
def test_eval_outputs_equal_reference(tunable: bool, dtype: torch.dtype, masked: bool) -> None:
    ref, ours = pair(tunable, dtype)
    ref.eval()
    ours.eval()
    text, mel, mel_len, mask, query_mask = inputs(dtype)
    kw = dict(mask=mask, query_mask=query_mask) if masked else {}
    cv_r, attn_r, fr_r = ref(text, mel, mel, mel_len, **kw)
    cv_o, attn_o, fr_o = ours(text, mel, mel, mel_len, **kw)
    torch.testing.assert_close(cv_o, cv_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn_o, attn_r, rtol=1e-5, atol=1e-6)
    assert isinstance(fr_o, float) and abs(fr_o - fr_r) < 1e-5


@pytest.mark.parametrize("tunable", [False, True])
def test_gradients_equal_reference(tunable: bool) -> None:
    ref, ours = pair(tunable, torch.float64)
    ref.eval()
    ours.eval()
    text, mel, mel_len, mask, query_mask = inputs(torch.float64)
    w = torch.randn(4, 7, D_MODEL, dtype=torch.float64)
    for model in (ref, ours):
        cv, attn, _ = model(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
        ((cv * w).sum() + attn.pow(2).sum()).backward()
    for (name, p_r), (_, p_o) in zip(ref.named_parameters(), ours.named_parameters()):
        assert p_r.grad is not None and p_o.grad is not None, name
        torch.testing.assert_close(p_o.grad, p_r.grad, rtol=1e-8, atol=1e-10, msg=name)


def test_train_mode_matches_reference_with_same_seed() -> None:
    # Same RNG draws in the same order (noise before the sigmoid, then dropout).
    ref, ours = pair(True, dropout=0.2)
    ref.train()
    ours.train()
    text, mel, mel_len, mask, query_mask = inputs()
    torch.manual_seed(123)
    cv_r, attn_r, _ = ref(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
    torch.manual_seed(123)
    cv_o, attn_o, _ = ours(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
    torch.testing.assert_close(cv_o, cv_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attn_o, attn_r)


def test_aw_prev_and_float_masks() -> None:
    ref, ours = pair(True, torch.float64)
    ref.eval()
    ours.eval()
    text, mel, mel_len, mask, query_mask = inputs(torch.float64)
    aw_prev = torch.softmax(torch.randn(4, 7, 1, dtype=torch.float64), dim=1)
    cv_r, _, _ = ref(text, mel, mel, mel_len, mask=mask, query_mask=query_mask, aw_prev=aw_prev)
    # The reference README documents 1./0. masks: accepted here, same meaning.
    cv_o, _, _ = ours(
        text, mel, mel, mel_len, mask=mask.double(), query_mask=query_mask.float(), aw_prev=aw_prev
    )
    torch.testing.assert_close(cv_o, cv_r, rtol=1e-10, atol=1e-10)


def test_reference_departures_are_real() -> None:
    """The documented departures from the paper hold in the reference computation."""
    _, ours = pair(True, torch.float64)
    ours.eval()
    text, mel, mel_len, mask, query_mask = inputs(torch.float64)
    _, attn, _ = ours(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
    p = torch.sigmoid(attn)
    assert p.min() >= 0.5 and p.max() <= 1 / (1 + torch.exp(torch.tensor(-1.0))) + 1e-12
    # Mass flows past the last valid frame and into padded tokens.
    a0 = torch.zeros(4, 7, 1, dtype=torch.float64)
    a0[:, 0] = 1
    alpha = reference_recurrence(p, a0)
    assert alpha[3, 1:, :].sum() > 0  # item 3 has one valid token
    assert alpha[2, :, 8:].sum() > 0  # item 2 has 8 valid frames


def test_bad_inputs() -> None:
    _, ours = pair(True)
    text, mel, mel_len, mask, _ = inputs()
    with pytest.raises(ValueError, match=r"Expected q of shape \(batch, len, 24\)"):
        ours(text[..., :5], mel, mel, mel_len)
    with pytest.raises(ValueError, match=r"Expected mask of shape \(4, 7, 23\)"):
        ours(text, mel, mel, mel_len, mask=mask[:, :, :5])
    with pytest.raises(ValueError, match=r"Expected mel_len of shape \(4,\)"):
        ours(text, mel, mel, mel_len[:2])
    with pytest.raises(ValueError, match=r"Expected aw_prev of shape \(4, 7, 1\)"):
        ours(text, mel, mel, mel_len, aw_prev=torch.zeros(4, 7))


# ---------------------------------------------------------------------------------------------
# The baseline copy itself computes the reference's numbers (float64 equation oracle)
# ---------------------------------------------------------------------------------------------


def test_baseline_expectation_matches_equation_oracle() -> None:
    """The reference's ``expectation`` (eval: no noise) is He et al. Eq. 8 on sigmoid(e)."""
    torch.manual_seed(0)
    ref = ReferenceSMA(D_MODEL, D_K, D_V, n_head=N_HEAD, is_tunable=True).double().eval()
    e = torch.randn(5, 6, 17, dtype=torch.float64) * 2
    aw_prev = torch.zeros(5, 6, 1, dtype=torch.float64)
    aw_prev[:, 0] = 1.0
    alpha, p = ref.expectation(e, aw_prev, 1)
    torch.testing.assert_close(p, torch.sigmoid(e))
    oracle = sma_reference_tensor(torch.sigmoid(e))  # no lengths, mass drops past the last token
    torch.testing.assert_close(alpha, oracle, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(reference_recurrence(p, aw_prev), oracle, rtol=1e-12, atol=1e-14)
    # A different alignment before frame 0 is honoured too.
    a0 = torch.softmax(torch.randn(5, 6, dtype=torch.float64), -1)
    alpha2, _ = ref.expectation(e, a0[:, :, None], 1)
    torch.testing.assert_close(alpha2, sma_reference_tensor(p, alpha0=a0), rtol=1e-12, atol=1e-14)


def test_baseline_layer_matches_equations() -> None:
    """The reference layer's output, recomputed from the paper's equations in float64."""
    torch.manual_seed(3)
    ref = ReferenceSMA(D_MODEL, D_K, D_V, n_head=N_HEAD, is_tunable=True).double().eval()
    text, mel, mel_len, mask, query_mask = inputs(torch.float64)
    cv, attn, fr_mean = ref(text, mel, mel, mel_len, mask=mask, query_mask=query_mask)
    b, u, t, h = text.shape[0], text.shape[1], mel.shape[1], N_HEAD
    en = ref.energy
    qh = en.w_qs(text).view(b, u, h, D_K).transpose(1, 2)  # (b, h, u, dk)
    kh = en.w_ks(mel).view(b, t, h, D_K).transpose(1, 2)
    vh = en.w_vs(mel).view(b, t, h, D_V).transpose(1, 2)
    energies = qh @ kh.transpose(-1, -2) / math.sqrt(D_K)
    # Softmax over valid frames; rows of padded tokens are all-masked, then zeroed.
    row_masked = mask[:, None].all(-1, keepdim=True)
    w = torch.softmax(energies.masked_fill(mask[:, None], -math.inf).nan_to_num(0.0), -1)
    w = torch.where(row_masked, 0.0, w)
    focus = w.amax(2).sum(-1) / mel_len[:, None]  # (b, h)
    best = focus.argmax(1)
    soft = w[torch.arange(b), best]  # (b, u, t)
    torch.testing.assert_close(attn, soft, rtol=1e-12, atol=1e-14)
    assert fr_mean == pytest.approx(float(focus.detach().amax(1).mean()), rel=1e-12)
    alpha = sma_reference_tensor(torch.sigmoid(soft))  # no masking, as the reference runs it
    v_cat = vh.transpose(1, 2).reshape(b, t, h * D_V)  # head-major features
    expected = ref.layer_norm(ref.last_layer(alpha @ v_cat))
    torch.testing.assert_close(cv, expected, rtol=1e-10, atol=1e-12)
