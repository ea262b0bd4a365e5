"""Forward-sum loss, MAS and the SMA-transition monotonic HMM against float64 loop oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.reference.alignment_ref import (
    forward_sum_nll_ref,
    hmm_loglik_bruteforce,
    hmm_loglik_ref,
    hmm_viterbi_ref,
)

from speechattn.functional.alignment import (
    forward_sum_loss,
    monotonic_alignment_search,
    monotonic_hmm_log_likelihood,
    monotonic_hmm_viterbi,
    uniform_durations,
)


def _ragged(seed: int, b: int = 3, u: int = 4, t: int = 7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, u, t, generator=g, dtype=torch.float64)
    tl = torch.tensor([u, u - 1, 2][:b], dtype=torch.int64)
    ml = torch.tensor([t, t - 2, 3][:b], dtype=torch.int64)
    return x, tl, ml


def test_forward_sum_matches_ctc_loop_oracle() -> None:
    x, tl, ml = _ragged(0)
    x = torch.log_softmax(x, dim=1)
    loss = forward_sum_loss(x, tl, ml, blank_logprob=-1.0)
    ref = np.mean(
        [
            forward_sum_nll_ref(x[i, : tl[i], : ml[i]].numpy(), -1.0) / int(tl[i])
            for i in range(x.shape[0])
        ]
    )
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, torch.tensor(ref, dtype=torch.float64), rtol=1e-9, atol=1e-9)


def test_forward_sum_padding_invariant_and_gradcheck() -> None:
    x, tl, ml = _ragged(1)
    y = x.clone()
    for i in range(3):
        y[i, tl[i] :, :] = float("nan")
        y[i, :, ml[i] :] = 1e6
    x.requires_grad_(True)
    y.requires_grad_(True)
    lx = forward_sum_loss(x, tl, ml)
    ly = forward_sum_loss(y, tl, ml)
    torch.testing.assert_close(lx, ly)
    (gy,) = torch.autograd.grad(ly, y)
    assert torch.isfinite(gy).all()
    assert torch.autograd.gradcheck(
        lambda z: forward_sum_loss(z, tl, ml), (x[:, :, :].detach().requires_grad_(True),)
    )


@pytest.mark.parametrize("impl", ["numba", "torch"])
def test_viterbi_matches_bruteforce(impl: str) -> None:
    g = torch.Generator().manual_seed(3)
    b, u, t = 4, 4, 8
    emis = torch.randn(b, u, t, generator=g, dtype=torch.float64)
    p = torch.rand(b, u, t, generator=g, dtype=torch.float64) * 0.98 + 0.01
    tl = torch.tensor([4, 3, 1, 4])
    ml = torch.tensor([8, 5, 3, 4])
    out = monotonic_hmm_viterbi(emis, p.log(), (1 - p).log(), tl, ml, impl=impl)
    for i in range(b):
        ui, ti = int(tl[i]), int(ml[i])
        best, score = hmm_viterbi_ref(
            emis[i, :ui, :ti].numpy(),
            p[i, :ui, :ti].log().numpy(),
            (1 - p[i, :ui, :ti]).log().numpy(),
        )
        got = out.path[i, :ui, :ti].argmax(0).tolist()
        assert got == best, (i, got, best)
        assert int(out.durations[i].sum()) == ti
        assert (out.durations[i, :ui] >= 1).all()
        assert (out.durations[i, ui:] == 0).all()
        assert out.path[i, :, ti:].abs().sum() == 0
        assert math.isfinite(score)


@settings(max_examples=25, deadline=None)
@given(
    u=st.integers(1, 6),
    extra=st.integers(0, 10),
    pad_u=st.integers(0, 3),
    pad_t=st.integers(0, 4),
    seed=st.integers(0, 10_000),
)
def test_mas_properties_numba_equals_torch(
    u: int, extra: int, pad_u: int, pad_t: int, seed: int
) -> None:
    t = u + extra
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, u + pad_u, t + pad_t, generator=g)
    tl = torch.tensor([u, max(1, u - 1)])
    ml = torch.tensor([t, max(int(tl[1]), t - 1)])
    a = monotonic_alignment_search(x, tl, ml, impl="numba")
    b = monotonic_alignment_search(x, tl, ml, impl="torch")
    torch.testing.assert_close(a.path, b.path)
    assert torch.equal(a.durations.sum(1), ml)
    for i in range(2):
        idx = a.path[i, :, : ml[i]].argmax(0)
        steps = idx[1:] - idx[:-1]
        assert ((steps == 0) | (steps == 1)).all()
        assert int(idx[0]) == 0 and int(idx[-1]) == int(tl[i]) - 1
        assert torch.equal(a.path[i, :, : ml[i]].sum(0), torch.ones(int(ml[i])))
    # Padding content never changes the path.
    y = x.clone()
    y[0, u:, :] = 100.0
    y[0, :, t:] = 100.0
    assert torch.equal(monotonic_alignment_search(y, tl, ml).path[0], a.path[0])


def test_hmm_loglik_matches_loops_and_bruteforce() -> None:
    g = torch.Generator().manual_seed(5)
    b, u, t = 3, 3, 6
    emis = torch.randn(b, u, t, generator=g, dtype=torch.float64)
    p = torch.rand(b, u, t, generator=g, dtype=torch.float64) * 0.9 + 0.05
    tl = torch.tensor([3, 2, 1])
    ml = torch.tensor([6, 4, 1])
    ll = monotonic_hmm_log_likelihood(emis, p.log(), (1 - p).log(), tl, ml)
    for i in range(b):
        ui, ti = int(tl[i]), int(ml[i])
        args = (
            emis[i, :ui, :ti].numpy(),
            p[i, :ui, :ti].log().numpy(),
            (1 - p[i, :ui, :ti]).log().numpy(),
        )
        assert ll[i].item() == pytest.approx(hmm_loglik_ref(*args), abs=1e-10)
        assert ll[i].item() == pytest.approx(hmm_loglik_bruteforce(*args), abs=1e-10)


def test_hmm_loglik_gradcheck_and_padding() -> None:
    g = torch.Generator().manual_seed(6)
    emis = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    logit = torch.randn(2, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    tl = torch.tensor([3, 2])
    ml = torch.tensor([5, 3])

    def f(e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return monotonic_hmm_log_likelihood(
            e, torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z), tl, ml
        )

    assert torch.autograd.gradcheck(f, (emis, logit))
    e2 = emis.detach().clone()
    e2[1, 2:, :] = float("nan")
    e2[1, :, 3:] = float("inf")
    e2.requires_grad_(True)
    out = f(e2, logit)
    torch.testing.assert_close(out, f(emis, logit))
    out.sum().backward()
    assert e2.grad is not None and torch.isfinite(e2.grad).all()


def test_uniform_durations_sum() -> None:
    tl = torch.tensor([3, 5, 1])
    ml = torch.tensor([10, 17, 4])
    d = uniform_durations(tl, ml)
    assert torch.equal(d.sum(1), ml)
    assert (d[0, :3] >= 3).all() and d[2, 1:].sum() == 0


def test_bad_input_messages() -> None:
    x = torch.randn(1, 5, 3)
    with pytest.raises(
        ValueError,
        match=r"per token: expected mel_lengths\[0\] >= 5 \(text_lengths\[0\]\); found 3\.",
    ):
        monotonic_alignment_search(x)
    with pytest.raises(ValueError, match=r"\(B, U, T\)"):
        forward_sum_loss(torch.randn(5, 3))
    with pytest.raises(TypeError, match="floating"):
        monotonic_alignment_search(torch.ones(1, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="impl"):
        monotonic_alignment_search(torch.randn(1, 2, 3), impl="cuda")


def test_hmm_numba_forward_backward_matches_torch_autograd() -> None:
    g = torch.Generator().manual_seed(7)
    b, u, t = 3, 5, 9
    emis = torch.randn(b, u, t, generator=g, dtype=torch.float64)
    z = torch.randn(b, u, t, generator=g, dtype=torch.float64)
    tl = torch.tensor([5, 3, 1])
    ml = torch.tensor([9, 6, 2])
    grads = []
    vals = []
    for impl in ("torch", "numba"):
        e = emis.clone().requires_grad_(True)
        zz = z.clone().requires_grad_(True)
        ll = monotonic_hmm_log_likelihood(
            e,
            torch.nn.functional.logsigmoid(zz),
            torch.nn.functional.logsigmoid(-zz),
            tl,
            ml,
            impl=impl,
        )
        (ll * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum().backward()
        vals.append(ll.detach())
        grads.append((e.grad, zz.grad))
    torch.testing.assert_close(vals[0], vals[1])
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    # Posterior occupancy: each valid frame's gradient column sums to 1.
    e = emis.clone().requires_grad_(True)
    monotonic_hmm_log_likelihood(e, None, None, tl, ml, impl="numba").sum().backward()
    assert e.grad is not None
    for i in range(b):
        torch.testing.assert_close(
            e.grad[i, :, : ml[i]].sum(0), torch.ones(int(ml[i]), dtype=torch.float64)
        )
    assert torch.autograd.gradcheck(
        lambda a: monotonic_hmm_log_likelihood(a, None, None, tl, ml, impl="numba"),
        (emis.clone().requires_grad_(True),),
    )


def test_forward_sum_loss_empty_batch_is_a_clear_error() -> None:
    empty = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(
        ValueError, match=r"forward_sum_loss: expected a batch of at least one item"
    ):
        forward_sum_loss(torch.randn(0, 3, 5), empty, empty)
    with pytest.raises(ValueError, match=r"B = 0"):
        forward_sum_loss(torch.randn(0, 3, 5))


def test_one_viterbi_serves_mas_and_stepwise_decoding() -> None:
    """monotonic_viterbi is the HMM Viterbi with stay log p / move log(1 - p) and no emissions;
    both implementations agree, and the two path types are one class."""
    from speechattn.functional import AlignmentPath, MonotonicPath, monotonic_viterbi

    assert MonotonicPath is AlignmentPath
    g = torch.Generator().manual_seed(3)
    p = torch.rand(3, 2, 5, 9, generator=g, dtype=torch.float64)
    tl, ml = torch.tensor([5, 2, 4]), torch.tensor([9, 6, 4])
    a = monotonic_viterbi(p, tl, ml, impl="numba")
    b = monotonic_viterbi(p, tl, ml, impl="torch")
    assert torch.equal(a.path, b.path) and torch.equal(a.durations, b.durations)
    pc = p.clamp(1e-12, 1 - 1e-12)
    for h in range(2):
        ref = monotonic_hmm_viterbi(
            torch.zeros_like(pc[:, h]), pc[:, h].log(), (1 - pc[:, h]).log(), tl, ml
        )
        assert torch.equal(ref.path, a.path[:, h])


def test_focus_rate_propagates_nan() -> None:
    from speechattn.functional import focus_rate

    a = torch.rand(2, 3, 4)
    a[0, 1, 2] = float("nan")
    fr = focus_rate(a)
    assert torch.isnan(fr[0]) and torch.isfinite(fr[1])
    # NaN in padding is ignored; an all-zero column still counts as 0
    b = torch.rand(1, 3, 4)
    b[0, 2, :] = float("nan")
    b[0, :, 0] = 0.0
    fr = focus_rate(b, torch.tensor([2]), torch.tensor([4]))
    assert torch.isfinite(fr).all()
    expected = (b[0, :2, 1:].amax(0) / b[0, :2, 1:].sum(0)).sum() / 4
    torch.testing.assert_close(fr[0], expected)
