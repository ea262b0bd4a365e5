"""Stepwise monotonic alignment, Viterbi, durations and focus rate vs float64 loop oracles."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.sma_reference import (
    path_log_score,
    sma_reference_tensor,
    viterbi_brute_force,
    viterbi_loop_dp,
)
from speechattn.functional import (
    MonotonicPath,
    alignment_to_durations,
    focus_rate,
    monotonic_viterbi,
    stepwise_monotonic_alignment,
)
from speechattn.kernels import (
    _auto_sma_kernel,
    available,
    get_sma_kernel,
    register_sma_kernel,
    sma_kernel_names,
)

IMPLS = ["torch", "numba"]
HYP = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)


def _ragged(B: int, U: int, T: int, *, heads: int | None, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shape = (B, U, T) if heads is None else (B, heads, U, T)
    p = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    tl = torch.randint(1, U + 1, (B,), generator=g)
    ml = torch.randint(1, T + 1, (B,), generator=g)
    tl[0], ml[0] = U, T  # one full-length item
    return p, tl, ml


def _pad_fill(x: torch.Tensor, tl: torch.Tensor, ml: torch.Tensor, value: float) -> torch.Tensor:
    """Overwrite padded tokens/frames of x (.., U, T) with value."""
    U, T = x.shape[-2], x.shape[-1]
    uv = torch.arange(U) < tl[:, None]
    tv = torch.arange(T) < ml[:, None]
    valid = uv[:, :, None] & tv[:, None, :]
    if x.dim() == 4:
        valid = valid[:, None]
    return torch.where(valid, x, torch.full_like(x, value))


# ---------------------------------------------------------------------------------------------
# Forward vs the float64 oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("heads", [None, 3])
@pytest.mark.parametrize("mass", ["drop", "preserve"])
@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_forward_matches_reference(impl: str, heads: int | None, mass: str, mode: str) -> None:
    p, tl, ml = _ragged(4, 6, 11, heads=heads, seed=1)
    if mode == "hard":  # make hard paths advance often enough to be interesting
        p = (p - 0.15).clamp(0, 1)
    alpha = stepwise_monotonic_alignment(p, tl, ml, mode=mode, mass=mass, impl=impl)
    ref = sma_reference_tensor(p, tl, ml, preserve=mass == "preserve", hard=mode == "hard")
    assert alpha.shape == p.shape and alpha.dtype == p.dtype
    torch.testing.assert_close(alpha, ref, rtol=1e-12, atol=1e-13)
    if mode == "hard":
        assert not alpha.requires_grad
        assert set(alpha.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("impl", IMPLS)
def test_initial_alignment_matches_reference(impl: str) -> None:
    p, tl, ml = _ragged(3, 5, 9, heads=2, seed=2)
    a0 = torch.softmax(torch.randn(3, 2, 5, dtype=torch.float64), -1)
    for mass in ("drop", "preserve"):
        alpha = stepwise_monotonic_alignment(p, tl, ml, mass=mass, initial_alignment=a0, impl=impl)
        ref = sma_reference_tensor(p, tl, ml, preserve=mass == "preserve", alpha0=a0)
        torch.testing.assert_close(alpha, ref, rtol=1e-12, atol=1e-13)


def test_golden_two_tokens() -> None:
    # Hand-computed: alpha_0 = [p0, 1 - p0]; alpha_1(0) = p0 * p1(0);
    # alpha_1(1) = (1 - p0) * p1(1) + p0 * (1 - p1(0)).
    p = torch.tensor([[[0.6, 0.3], [0.9, 0.2]]], dtype=torch.float64)
    alpha = stepwise_monotonic_alignment(p, impl="torch")
    expected = torch.tensor([[[0.6, 0.6 * 0.3], [0.4, 0.4 * 0.2 + 0.6 * 0.7]]], dtype=torch.float64)
    torch.testing.assert_close(alpha, expected)
    kept = stepwise_monotonic_alignment(p, mass="preserve", impl="torch")
    torch.testing.assert_close(
        kept[0, 1], torch.tensor([0.4, 0.4 + 0.6 * 0.7], dtype=torch.float64)
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_and_half_inputs(impl: str) -> None:
    p, tl, ml = _ragged(3, 7, 20, heads=None, seed=3)
    ref = sma_reference_tensor(p, tl, ml)
    a32 = stepwise_monotonic_alignment(p.float(), tl, ml, impl=impl)
    assert a32.dtype == torch.float32
    torch.testing.assert_close(a32.double(), ref, rtol=1e-5, atol=1e-6)
    for dt in (torch.bfloat16, torch.float16):
        ph = p.to(dt).requires_grad_(True)
        ah = stepwise_monotonic_alignment(ph, tl, ml, impl=impl)
        assert ah.dtype == dt
        # computed in float32 from the rounded inputs: only the output rounding differs
        ref_h = sma_reference_tensor(ph.detach().double(), tl, ml)
        torch.testing.assert_close(ah.double(), ref_h, rtol=1e-2, atol=1e-2)
        ah.float().sum().backward()
        assert ph.grad is not None and ph.grad.dtype == dt
        assert torch.isfinite(ph.grad.float()).all()


def test_impls_agree_at_moderate_size() -> None:
    p, tl, ml = _ragged(5, 30, 120, heads=2, seed=4, dtype=torch.float32)
    a0 = torch.softmax(torch.randn(5, 2, 30), -1).requires_grad_(True)
    p.requires_grad_(True)
    w = torch.randn_like(p)
    res = {}
    for impl in IMPLS:
        for mass in ("drop", "preserve"):
            alpha = stepwise_monotonic_alignment(
                p, tl, ml, mass=mass, initial_alignment=a0, impl=impl
            )
            gp, ga0 = torch.autograd.grad((alpha * w).sum(), (p, a0))
            res[impl, mass] = (alpha, gp, ga0)
    for mass in ("drop", "preserve"):
        for x, y in zip(res["torch", mass], res["numba", mass]):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mass", ["drop", "preserve"])
def test_gradcheck_custom_backward(impl: str, mass: str) -> None:
    p, tl, ml = _ragged(3, 4, 6, heads=2, seed=5)
    p = p.clamp(0.05, 0.95).requires_grad_(True)
    a0 = torch.rand(3, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(p_: torch.Tensor, a0_: torch.Tensor) -> torch.Tensor:
        return stepwise_monotonic_alignment(p_, tl, ml, mass=mass, initial_alignment=a0_, impl=impl)

    assert torch.autograd.gradcheck(fn, (p, a0), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_matches_autograd_of_naive_loop(impl: str) -> None:
    """The closed-form adjoint equals autograd through a naive differentiable loop."""
    p, tl, ml = _ragged(3, 5, 8, heads=None, seed=6)
    p.requires_grad_(True)
    w = torch.randn_like(p)
    alpha = stepwise_monotonic_alignment(p, tl, ml, impl=impl)
    (g_fast,) = torch.autograd.grad((alpha * w).sum(), p)
    loss = p.new_zeros(())
    for b in range(3):
        L, M = int(tl[b]), int(ml[b])
        prev = [p.new_ones(()) if u == 0 else p.new_zeros(()) for u in range(L)]
        for t in range(M):
            cur = []
            for u in range(L):
                v = prev[u] * p[b, u, t]
                if u > 0:
                    v = v + prev[u - 1] * (1 - p[b, u - 1, t])
                cur.append(v)
                loss = loss + v * w[b, u, t]
            prev = cur
    (g_naive,) = torch.autograd.grad(loss, p)
    torch.testing.assert_close(g_fast, g_naive, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
def test_padding_gets_zero_gradient_and_ignores_nan(impl: str) -> None:
    p, tl, ml = _ragged(3, 5, 9, heads=None, seed=7)
    tl[1], ml[1] = 2, 4
    p_nan = _pad_fill(p, tl, ml, math.nan).requires_grad_(True)
    a0 = torch.zeros(3, 5, dtype=torch.float64)
    a0[:, 0] = 1.0
    a0[1, 3] = math.nan  # padded token of the initial alignment
    a0.requires_grad_(True)
    for mass in ("drop", "preserve"):
        alpha = stepwise_monotonic_alignment(
            p_nan, tl, ml, mass=mass, initial_alignment=a0, impl=impl
        )
        assert torch.isfinite(alpha).all()
        clean = stepwise_monotonic_alignment(p, tl, ml, mass=mass, impl=impl)
        torch.testing.assert_close(alpha, clean, rtol=0, atol=0)
        gp, ga0 = torch.autograd.grad(alpha.sum(), (p_nan, a0))
        assert torch.isfinite(gp).all() and torch.isfinite(ga0).all()
        assert torch.equal(_pad_fill(gp, tl, ml, 0.0), gp)
        assert ga0[1, 2:].abs().sum() == 0
        if mass == "preserve":  # the absorbing token's p is a constant 1: zero gradient
            for b in range(3):
                assert gp[b, int(tl[b]) - 1].abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# Hypothesis properties
# ---------------------------------------------------------------------------------------------


@st.composite
def _problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B = draw(st.integers(1, 3))
    U = draw(st.integers(1, 6))
    T = draw(st.integers(1, 9))
    heads = draw(st.sampled_from([None, 2]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    shape = (B, U, T) if heads is None else (B, heads, U, T)
    p = torch.rand(shape, generator=g, dtype=torch.float64)
    tl = torch.tensor(draw(st.lists(st.integers(1, U), min_size=B, max_size=B)))
    ml = torch.tensor(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    return p, tl, ml


@HYP
@given(_problems(), st.sampled_from(IMPLS), st.sampled_from(["drop", "preserve"]))
def test_property_padding_invariance_and_column_sums(prob, impl: str, mass: str) -> None:
    p, tl, ml = prob
    alpha = stepwise_monotonic_alignment(p, tl, ml, mass=mass, impl=impl)
    for fill in (0.0, 1.0, math.nan):
        other = stepwise_monotonic_alignment(
            _pad_fill(p, tl, ml, fill), tl, ml, mass=mass, impl=impl
        )
        assert torch.equal(other, alpha)
    assert torch.equal(_pad_fill(alpha, tl, ml, 0.0), alpha)  # padding exactly zero
    assert (alpha >= 0).all()
    cols = alpha.sum(-2)  # (B, [H,] T)
    tv = torch.arange(p.shape[-1]) < ml[:, None]
    if p.dim() == 4:
        tv = tv[:, None].expand_as(cols)
    assert (cols <= 1 + 1e-12).all()
    if mass == "preserve":
        torch.testing.assert_close(cols[tv], torch.ones_like(cols[tv]))


@HYP
@given(_problems(), st.sampled_from(IMPLS), st.sampled_from(["soft", "hard"]))
def test_property_batch_equals_per_item(prob, impl: str, mode: str) -> None:
    p, tl, ml = prob
    alpha = stepwise_monotonic_alignment(p, tl, ml, mode=mode, mass="preserve", impl=impl)
    for b in range(p.shape[0]):
        one = stepwise_monotonic_alignment(
            p[b : b + 1], tl[b : b + 1], ml[b : b + 1], mode=mode, mass="preserve", impl=impl
        )
        torch.testing.assert_close(one[0], alpha[b], rtol=1e-14, atol=0)


def _check_path(path: torch.Tensor, dur: torch.Tensor, L: int, M: int) -> list[int]:
    """path (U, T) one-hot per valid frame; returns the token per frame."""
    assert path[L:].abs().sum() == 0 and path[:, M:].abs().sum() == 0
    cols = path[:, :M].sum(0)
    assert torch.equal(cols, torch.ones_like(cols))
    tokens = path[:, :M].argmax(0).tolist()
    assert tokens[0] == 0 and tokens[-1] == L - 1
    steps = [b - a for a, b in itertools.pairwise(tokens)]
    assert set(steps) <= {0, 1}  # monotone, never skips
    assert sorted(set(tokens)) == list(range(L))  # covers every valid token
    assert dur[:L].min() >= 1 and int(dur.sum()) == M and dur[L:].abs().sum() == 0
    assert dur.tolist() == path.sum(1).long().tolist()
    return tokens


@HYP
@given(_problems(), st.sampled_from(IMPLS))
def test_property_viterbi_is_optimal_monotone_and_covering(prob, impl: str) -> None:
    p, tl, ml = prob
    ml = torch.maximum(ml, tl).clamp(max=p.shape[-1])
    tl = torch.minimum(tl, ml)
    res = monotonic_viterbi(p, tl, ml, impl=impl)
    assert isinstance(res, MonotonicPath)
    assert res.path.shape == p.shape and res.durations.shape == p.shape[:-1]
    assert res.durations.dtype == torch.int64
    assert torch.equal(alignment_to_durations(res.path, tl, ml), res.durations)
    p4 = p if p.dim() == 4 else p[:, None]
    path4 = res.path if p.dim() == 4 else res.path[:, None]
    dur4 = res.durations if p.dim() == 4 else res.durations[:, None]
    for b in range(p.shape[0]):
        L, M = int(tl[b]), int(ml[b])
        for h in range(p4.shape[1]):
            tokens = _check_path(path4[b, h], dur4[b, h], L, M)
            pl = p4[b, h].tolist()
            best, winners = viterbi_brute_force(pl, L, M)
            assert math.isclose(path_log_score(pl, tokens), best, rel_tol=1e-9, abs_tol=1e-9)
            if len(winners) == 1:
                assert tokens == winners[0]
            dp_score, dp_tokens = viterbi_loop_dp(pl, L, M)
            assert math.isclose(dp_score, best, rel_tol=1e-9, abs_tol=1e-9)
            assert tokens == dp_tokens  # same tie-break (stay on ties)


def test_viterbi_impls_agree_and_extreme_probabilities() -> None:
    p, tl, ml = _ragged(4, 12, 40, heads=2, seed=8)
    p[p < 0.3] = 0.0  # log(0) is clamped: forced end still reachable
    p[p > 0.9] = 1.0
    ml = torch.maximum(ml, tl)
    a = monotonic_viterbi(p, tl, ml, impl="torch")
    b = monotonic_viterbi(p, tl, ml, impl="numba")
    assert torch.equal(a.path, b.path) and torch.equal(a.durations, b.durations)
    assert torch.equal(a.durations.sum(-1), ml[:, None].expand(4, 2))
    assert (a.durations.gather(-1, (tl - 1)[:, None, None].expand(4, 2, 1)) >= 1).all()


def test_viterbi_all_stay_still_reaches_last_token() -> None:
    p = torch.ones(1, 4, 10)
    res = monotonic_viterbi(p)
    # Every path pays the same three clamped advances (a tie); the forced end still holds and
    # the documented tie-break (stay preferred at each cell, backtracking from the end) holds.
    assert res.durations.tolist() == [[1, 1, 1, 7]]


# ---------------------------------------------------------------------------------------------
# Hard mode durations and focus rate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_hard_preserve_durations_sum_to_mel_length(impl: str) -> None:
    p, tl, ml = _ragged(4, 8, 30, heads=2, seed=9)
    p = torch.where(torch.rand_like(p) < 0.8, 0.9, 0.1)
    alpha = stepwise_monotonic_alignment(p, tl, ml, mode="hard", mass="preserve", impl=impl)
    dur = alignment_to_durations(alpha, tl, ml)
    assert dur.dtype == torch.int64 and dur.shape == (4, 2, 8)
    assert torch.equal(dur.sum(-1), ml[:, None].expand(4, 2))
    tokens = alpha.argmax(-2)  # (B, H, T)
    steps = tokens.diff(dim=-1)
    tv = torch.arange(30)[None, None, 1:] < ml[:, None, None]
    assert ((steps[tv.expand_as(steps)] == 0) | (steps[tv.expand_as(steps)] == 1)).all()


def test_focus_rate_hard_uniform_and_ragged() -> None:
    p, tl, ml = _ragged(3, 6, 20, heads=2, seed=10)
    ml = torch.maximum(ml, tl)
    hard = monotonic_viterbi(p, tl, ml).path
    fr = focus_rate(hard, tl, ml)
    assert fr.shape == (3, 2)
    torch.testing.assert_close(fr, torch.ones(3, 2, dtype=torch.float64))
    uniform = torch.rand(3, 6, 20, dtype=torch.float64)
    uv = torch.arange(6) < tl[:, None]
    uniform = torch.where(uv[:, :, None], torch.full_like(uniform, 0.25), uniform)
    fr_u = focus_rate(uniform, tl, ml)  # padded token values must not matter
    assert fr_u.shape == (3,)
    torch.testing.assert_close(fr_u, 1.0 / tl.double())
    # Reference loop: normalise each valid frame over valid tokens, max, mean over valid frames.
    attn = torch.rand(3, 2, 6, 20, dtype=torch.float64)
    got = focus_rate(attn, tl, ml)
    for b in range(3):
        for h in range(2):
            L, M = int(tl[b]), int(ml[b])
            vals = []
            for t in range(M):
                col = [float(attn[b, h, u, t]) for u in range(L)]
                vals.append(max(col) / sum(col))
            assert math.isclose(float(got[b, h]), sum(vals) / M, rel_tol=1e-12)
    attn.requires_grad_(True)
    focus_rate(attn, tl, ml).sum().backward()
    assert attn.grad is not None and torch.isfinite(attn.grad).all()


def test_focus_rate_zero_columns_count_as_zero() -> None:
    attn = torch.zeros(1, 3, 4)
    attn[0, 0, :2] = 1.0
    assert focus_rate(attn).tolist() == [0.5]


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors() -> None:
    p = torch.full((2, 3, 5), 0.5)
    with pytest.raises(ValueError, match=r"\(B, U, T\) or \(B, H, U, T\)"):
        stepwise_monotonic_alignment(torch.rand(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        stepwise_monotonic_alignment(torch.ones(2, 3, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="float tensor"):
        stepwise_monotonic_alignment([[0.5]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"found min -0\.5, max 0\.5 "):
        q = p.clone()
        q[0, 0, 0] = -0.5
        stepwise_monotonic_alignment(q)
    with pytest.raises(ValueError, match=r"found min 0\.5, max 2 "):
        q = p.clone()
        q[1, 2, 4] = 2.0
        stepwise_monotonic_alignment(q)
    with pytest.raises(ValueError, match="NaN"):
        q = p.clone()
        q[1, 0, 0] = math.nan
        stepwise_monotonic_alignment(q)
    with pytest.raises(ValueError, match=r"text_lengths\[1\] = 4"):
        stepwise_monotonic_alignment(p, torch.tensor([3, 4]))
    with pytest.raises(ValueError, match=r"mel_lengths\[0\] = 0"):
        stepwise_monotonic_alignment(p, None, torch.tensor([0, 5]))
    with pytest.raises(TypeError, match="integer"):
        stepwise_monotonic_alignment(p, torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        stepwise_monotonic_alignment(p, torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match="mode"):
        stepwise_monotonic_alignment(p, mode="argmax")
    with pytest.raises(ValueError, match="mass"):
        stepwise_monotonic_alignment(p, mass="keep")
    with pytest.raises(ValueError, match="Unknown SMA impl"):
        stepwise_monotonic_alignment(p, impl="cuda-magic")
    with pytest.raises(ValueError, match=r"initial_alignment of shape \(2, 3\)"):
        stepwise_monotonic_alignment(p, initial_alignment=torch.rand(2, 4))
    with pytest.raises(TypeError, match=r"dtype torch\.float32"):
        stepwise_monotonic_alignment(p, initial_alignment=torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mel_lengths\[1\] = 2 < text_lengths\[1\]"):
        monotonic_viterbi(p, torch.tensor([3, 3]), torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="impl"):
        monotonic_viterbi(p, impl="magic")
    for impl in IMPLS:  # -0.0 is a valid probability; inf is not
        q = p.clone()
        q[0, 1, 1] = -0.0
        assert torch.isfinite(stepwise_monotonic_alignment(q, impl=impl)).all()
        q[1, 1, 1] = math.inf
        with pytest.raises(ValueError, match="max inf"):
            stepwise_monotonic_alignment(q, impl=impl)
        with pytest.raises(ValueError, match="NaN"):
            stepwise_monotonic_alignment(torch.full((1, 2, 3), math.nan).double(), impl=impl)
    # padded positions may hold anything, including values outside [0, 1]
    q = p.clone()
    q[0, :, 3:] = 7.0
    out = stepwise_monotonic_alignment(q, None, torch.tensor([3, 5]))
    assert torch.isfinite(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torch_path_matches_cpu() -> None:
    p, tl, ml = _ragged(3, 6, 12, heads=2, seed=11)
    cpu = stepwise_monotonic_alignment(p, tl, ml, impl="torch")
    gpu = stepwise_monotonic_alignment(p.cuda(), tl.cuda(), ml.cuda(), impl="torch")
    torch.testing.assert_close(gpu.cpu(), cpu)
    with pytest.raises(ValueError, match="runs on cpu"):
        stepwise_monotonic_alignment(p.cuda(), impl="numba")


# ---------------------------------------------------------------------------------------------
# Kernel registry
# ---------------------------------------------------------------------------------------------


def test_kernel_registry_dispatch() -> None:
    assert "numba" in sma_kernel_names()
    assert _auto_sma_kernel("cpu") == "numba"
    assert get_sma_kernel("numba").devices == ("cpu",)
    assert available()["numba"].startswith("yes")
    calls: list[str] = []
    torch_k = get_sma_kernel("numba")

    def fwd(*args):  # type: ignore[no-untyped-def]
        calls.append("fwd")
        return torch_k.forward(*args)

    def bwd(*args):  # type: ignore[no-untyped-def]
        calls.append("bwd")
        return torch_k.backward(*args)

    register_sma_kernel("spy_test", fwd, bwd, devices=("cpu",))
    p = torch.rand(2, 3, 4, requires_grad=True)
    stepwise_monotonic_alignment(p, impl="spy_test").sum().backward()
    assert calls == ["fwd", "bwd"]
    with pytest.raises(ValueError, match="reserved"):
        register_sma_kernel("torch", fwd, bwd)


def test_numba_threaded_split_equals_single_thread() -> None:
    """Items dealt round-robin to threads give bit-identical results to one thread."""
    p, tl, ml = _ragged(9, 40, 420, heads=None, seed=12, dtype=torch.float32)
    p.requires_grad_(True)
    w = torch.randn_like(p)
    threads = torch.get_num_threads()
    out = {}
    try:
        for k in (1, 3):
            torch.set_num_threads(k)
            alpha = stepwise_monotonic_alignment(p, tl, ml, mass="preserve", impl="numba")
            (gp,) = torch.autograd.grad(alpha, p, w)
            vit = monotonic_viterbi(p, tl, torch.maximum(ml, tl), impl="numba")
            out[k] = (alpha, gp, vit.path, vit.durations)
    finally:
        torch.set_num_threads(threads)
    for x, y in zip(out[1], out[3]):
        assert torch.equal(x, y)


def test_float32_error_ratio_against_float64_golden() -> None:
    """The numba path's float32 error is at most a few times the torch spec's float32 error."""
    p, tl, ml = _ragged(6, 40, 300, heads=None, seed=13)
    p = p.clamp(0.6, 1.0)  # long dwell: many frames of accumulation per token
    p.requires_grad_(True)
    w = torch.randn_like(p)
    gold = stepwise_monotonic_alignment(p, tl, ml, impl="torch")
    (g_gold,) = torch.autograd.grad(gold, p, w)
    p32 = p.detach().float().requires_grad_(True)
    errs = {}
    for impl in IMPLS:
        a = stepwise_monotonic_alignment(p32, tl, ml, impl=impl)
        (g,) = torch.autograd.grad(a, p32, w.float())
        errs[impl] = (
            float((a.detach().double() - gold.detach()).abs().max()),
            float((g.double() - g_gold).abs().max()),
        )
    for k in range(2):
        assert errs["numba"][k] <= 4 * errs["torch"][k] + 1e-7, errs


def test_numba_is_imported_lazily() -> None:
    import subprocess
    import sys

    code = (
        "import sys, speechattn, speechattn.functional, speechattn.kernels, speechattn.cli;"
        "speechattn.kernels.available();"
        "print('numba' in sys.modules, 'speechattn.kernels._numba_sma' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


_FORK_SCRIPT = """
import multiprocessing as mp
import torch
from speechattn.functional import stepwise_monotonic_alignment as sma

def child(p):
    torch.set_num_threads(2)
    # returned as numpy: sending a tensor back runs a torch copy, which (as any parallel torch
    # op in a child forked after the parent's parallel ops) hangs in libgomp
    return sma(p, impl="numba").numpy()

if __name__ == "__main__":
    torch.set_num_threads(2)
    p = torch.rand(8, 40, 420, generator=torch.Generator().manual_seed(0))
    parent = sma(p, impl="numba")  # runs on the parent's OpenMP team (or thread pool)
    with mp.get_context("fork").Pool(1) as pool:
        out = pool.apply_async(child, (p,)).get(timeout=60)
    print("equal", torch.equal(torch.from_numpy(out), parent))
"""


def test_numba_threads_work_in_a_forked_child(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A forked process (DataLoader worker) runs the kernel on fresh Python threads instead of
    hanging on the parent's OpenMP team or thread pool (run in a clean subprocess: libgomp state left by other tests is not fork-safe)."""
    import subprocess
    import sys

    script = tmp_path / "fork_check.py"
    script.write_text(_FORK_SCRIPT)
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["equal", "True"]


@pytest.mark.parametrize("mass", ["drop", "preserve"])
def test_numba_fused_range_check_finds_every_bad_valid_entry(mass: str) -> None:
    """The range check runs inside the numba forward: a bad value at any valid cell (any item,
    head, the last valid token and frame included) raises, padding may hold anything, -0.0 and
    exact 0/1 pass; and every ValueError names the same min/max as the torch path."""
    p, tl, ml = _ragged(5, 9, 30, heads=3, seed=21, dtype=torch.float32)
    tl[3], ml[3], tl[4], ml[4] = 4, 11, 9, 30
    p = _pad_fill(p, tl, ml, math.nan)
    assert torch.isfinite(stepwise_monotonic_alignment(p, tl, ml, mass=mass, impl="numba")).all()
    edge = p.clone()
    edge[3, 2, 0, 0], edge[3, 2, 3, 10], edge[1, 0, 0, 0] = -0.0, 1.0, 0.0
    assert torch.isfinite(stepwise_monotonic_alignment(edge, tl, ml, mass=mass, impl="numba")).all()
    for cell, value in (((3, 2, 3, 10), 1.5), ((3, 1, 0, 0), -0.25), ((4, 0, 2, 5), math.nan)):
        bad = p.clone()
        bad[cell] = value
        msgs = []
        for impl in ("numba", "torch"):
            with pytest.raises(ValueError) as err:
                stepwise_monotonic_alignment(bad, tl, ml, mass=mass, impl=impl)
            msgs.append(str(err.value))
        assert msgs[0] == msgs[1]


def test_numba_backward_reads_a_broadcast_gradient_like_a_dense_one() -> None:
    """alpha.sum()'s stride-0 gradient is read from one row: the same grad_p (bitwise) as the
    dense gradient, and the same as the torch spec (float64)."""
    p, tl, ml = _ragged(6, 12, 40, heads=2, seed=4)
    grads = {}
    for name, impl, dense in (
        ("bcast", "numba", False),
        ("dense", "numba", True),
        ("spec", "torch", False),
    ):
        x = p.clone().requires_grad_(True)
        alpha = stepwise_monotonic_alignment(x, tl, ml, mass="preserve", impl=impl)
        seed = (
            torch.full_like(alpha, 0.75)
            if dense
            else torch.tensor(0.75, dtype=alpha.dtype).expand_as(alpha)
        )
        (grads[name],) = torch.autograd.grad(alpha, x, seed)
    assert torch.equal(grads["bcast"], grads["dense"])
    torch.testing.assert_close(grads["bcast"], grads["spec"], rtol=1e-12, atol=1e-13)
    # a gradient broadcast along frames only (stride 0 on the last axis) takes the dense path
    x = p.clone().requires_grad_(True)
    alpha = stepwise_monotonic_alignment(x, tl, ml, impl="numba")
    row = torch.rand(6, 2, 12, 1, dtype=alpha.dtype).expand_as(alpha)
    (g1,) = torch.autograd.grad(alpha, x, row)
    (g2,) = torch.autograd.grad(
        stepwise_monotonic_alignment(x, tl, ml, impl="numba"), x, row.contiguous()
    )
    assert torch.equal(g1, g2)
