"""Triton SMA kernels against a float64 loop oracle, forward and gradients.

CPU: the kernels run under the Triton interpreter in ONE subprocess
(``tests/_triton_sma_worker.py`` with ``TRITON_INTERPRET=1``): the variable is read when
``triton.language`` is imported, so it cannot be flipped inside this process (and setting it here
would leak into other tests). The worker only computes; every assertion is made here against the
oracle. CUDA: the same cases run in-process when a GPU is present (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import speechattn

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")

WORKER = Path(__file__).with_name("_triton_sma_worker.py")


# --------------------------------------------------------------------------------------------
# float64 loop oracle, written from the equation (He et al. 2019, Eq. 8); differentiable.
# --------------------------------------------------------------------------------------------
def oracle(p: torch.Tensor, alpha0: torch.Tensor, text_lengths, mel_lengths, preserve: bool):
    """alpha_t(u) = alpha_{t-1}(u) p_t(u) + alpha_{t-1}(u-1)(1 - p_t(u-1)), one cell at a time."""
    N, U, T = p.shape
    zero = p.new_zeros(())
    items = []
    for n in range(N):
        un, tn = int(text_lengths[n]), int(mel_lengths[n])
        prev = [alpha0[n, u] if u < un else zero for u in range(U)]
        cols = []
        for t in range(T):
            if t >= tn:
                cols.append(torch.stack([zero] * U))
                continue
            stay = [p.new_ones(()) if (preserve and u == un - 1) else p[n, u, t] for u in range(U)]
            cur = []
            for u in range(U):
                if u >= un:
                    cur.append(zero)
                    continue
                value = prev[u] * stay[u]
                if u > 0:
                    value = value + prev[u - 1] * (1 - stay[u - 1])
                cur.append(value)
            cols.append(torch.stack(cur))
            prev = cur
        items.append(torch.stack(cols, -1))
    return torch.stack(items)


def oracle_with_grads(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    p = case["p"].detach().to(torch.float64, copy=True).requires_grad_(True)
    alpha0 = case["alpha0"].detach().to(torch.float64, copy=True).requires_grad_(True)
    alpha = oracle(p, alpha0, case["text_lengths"], case["mel_lengths"], case["preserve"])
    grad = case["grad"].to(torch.float64)
    grad_p, grad_alpha0 = torch.autograd.grad((alpha * grad).sum(), (p, alpha0))
    return {"alpha": alpha.detach(), "grad_p": grad_p, "grad_alpha0": grad_alpha0}


# --------------------------------------------------------------------------------------------
# Cases (small: the interpreter runs every lane op through numpy)
# --------------------------------------------------------------------------------------------
def make_case(
    seed: int,
    N: int,
    U: int,
    T: int,
    *,
    preserve: bool,
    kind: str = "kernel",
    dtype: torch.dtype = torch.float64,
    block_u: int | None = None,
    shift: str | None = None,
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N, U, T, generator=g, dtype=torch.float64)
    alpha0 = torch.softmax(torch.randn(N, U, generator=g, dtype=torch.float64) * 2, -1)
    # Ragged: item 0 full size, the others random (including 1-token / 1-frame edges).
    text_lengths = torch.randint(1, U + 1, (N,), generator=g)
    mel_lengths = torch.randint(1, T + 1, (N,), generator=g)
    text_lengths[0], mel_lengths[0] = U, T
    if N > 2:
        text_lengths[-1], mel_lengths[-1] = 1, max(1, T // 2)
    # Padding content is garbage: it must not matter.
    for n in range(N):
        p[n, int(text_lengths[n]) :, :] = 7.0
        p[n, :, int(mel_lengths[n]) :] = -3.0
    return {
        "kind": kind,
        "p": p.to(dtype),
        "alpha0": alpha0.to(dtype),
        "text_lengths": text_lengths,
        "mel_lengths": mel_lengths,
        "preserve": preserve,
        "grad": torch.randn(N, U, T, generator=g, dtype=torch.float64).to(dtype),
        "block_u": block_u,
        "shift": shift,
    }


def _cases() -> dict[str, dict[str, Any]]:
    c: dict[str, dict[str, Any]] = {}
    for i, preserve in enumerate((False, True)):
        mass = "preserve" if preserve else "drop"
        # One token block (U below the block size).
        c[f"one_block_{mass}"] = make_case(10 + i, 3, 7, 12, preserve=preserve)
        # Several token blocks: U=37 with 16-token blocks -> 3 blocks, carries between them.
        c[f"three_blocks_{mass}"] = make_case(20 + i, 3, 37, 12, preserve=preserve, block_u=16)
    # Shared-scratch shift (store + debug_barrier + load) instead of tl.gather.
    c["scratch_three_blocks_preserve"] = make_case(
        31, 2, 37, 10, preserve=True, block_u=16, shift="scratch"
    )
    c["scratch_one_block_drop"] = make_case(40, 2, 9, 12, preserve=False, shift="scratch")
    c["exact_block_preserve"] = make_case(41, 2, 16, 9, preserve=True, block_u=16)
    # Lengths beyond the padded sizes are clamped inside the kernel (never out of bounds).
    c["overlong_lengths_drop"] = make_case(45, 2, 7, 9, preserve=False)
    c["overlong_lengths_drop"]["text_lengths"][1] = 7 + 3
    c["overlong_lengths_drop"]["mel_lengths"][1] = 9 + 2
    c["float32_drop"] = make_case(42, 3, 7, 12, preserve=False, dtype=torch.float32)
    c["bfloat16_preserve"] = make_case(43, 3, 7, 12, preserve=True, dtype=torch.bfloat16)
    c["float16_drop"] = make_case(44, 2, 7, 12, preserve=False, dtype=torch.float16)
    c["op_drop"] = make_case(50, 3, 9, 12, preserve=False, kind="op")
    c["op_preserve"] = make_case(51, 3, 9, 12, preserve=True, kind="op")
    c["gradcheck_drop"] = make_case(60, 2, 4, 5, preserve=False, kind="gradcheck")
    c["gradcheck_preserve"] = make_case(61, 2, 4, 5, preserve=True, kind="gradcheck")
    c["compile_preserve"] = make_case(70, 2, 5, 6, preserve=True, kind="compile")
    # The public API with impl="triton": 4-D (B, H, U, T), ragged, soft/hard x drop/preserve.
    for i, (mode, mass) in enumerate(
        [("soft", "drop"), ("soft", "preserve"), ("hard", "drop"), ("hard", "preserve")]
    ):
        c[f"functional_{mode}_{mass}"] = make_functional_case(100 + i, mode=mode, mass=mass)
    c["functional_soft_preserve_alpha0_float32"] = make_functional_case(
        110, mode="soft", mass="preserve", initial_alignment=True, dtype=torch.float32
    )
    return c


def make_functional_case(
    seed: int,
    *,
    mode: str,
    mass: str,
    initial_alignment: bool = False,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    B, H, U, T = 3, 2, 6, 10
    base = make_case(seed, B * H, U, T, preserve=mass == "preserve", dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1000)
    text_lengths = torch.tensor([U, 3, 1])
    mel_lengths = torch.tensor([T, 7, 4])
    case = {
        "kind": "functional",
        "mode": mode,
        "mass": mass,
        "p": torch.rand(B, H, U, T, generator=g, dtype=torch.float64).to(dtype),
        "text_lengths": text_lengths,
        "mel_lengths": mel_lengths,
        "grad": base["grad"].reshape(B, H, U, T),
    }
    if initial_alignment:
        case["initial_alignment"] = base["alpha0"].reshape(B, H, U)
    return case


CASES = _cases()
KERNEL_CASES = [k for k, v in CASES.items() if v["kind"] in ("kernel", "op")]


@pytest.fixture(scope="module")
def interp(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every case once in the interpreter subprocess; returns {case name: outputs}."""
    tmp = tmp_path_factory.mktemp("triton_sma")
    torch.save(CASES, tmp / "in.pt")
    env = dict(os.environ)
    env["TRITON_INTERPRET"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    # The worker must import the same speechattn as this process (the worktree's src/).
    src = str(Path(speechattn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp / "in.pt"), str(tmp / "out.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssertionError(f"worker failed:\n{proc.stdout}\n{proc.stderr}")
    return torch.load(tmp / "out.pt")


def _result(interp: dict[str, Any], name: str) -> dict[str, Any]:
    res = interp[name]
    if "error" in res:
        raise AssertionError(f"case {name} raised in the worker:\n{res['error']}")
    return res


def _tolerances(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) against the float64 oracle; outputs are stored in the input dtype."""
    return {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-5, 1e-6),
        torch.float16: (2e-3, 1e-4),
        torch.bfloat16: (1e-2, 1e-3),
    }[dtype]


def _check_against_oracle(case: dict[str, Any], res: dict[str, Any]) -> None:
    ref = oracle_with_grads(case)
    rtol, atol = _tolerances(case["p"].dtype)
    torch.testing.assert_close(res["alpha"].double(), ref["alpha"], rtol=rtol, atol=atol)
    # Gradients: scale the tolerance by the gradient's magnitude (cancellation in g_t - g_t(u+1)).
    for key in ("grad_p", "grad_alpha0"):
        scale = float(ref[key].abs().max()) + 1.0
        torch.testing.assert_close(res[key].double(), ref[key], rtol=rtol, atol=atol * scale * 4)
    # Exact zeros outside the valid region, whatever the padding held.
    for n in range(case["p"].shape[0]):
        un, tn = int(case["text_lengths"][n]), int(case["mel_lengths"][n])
        for key in ("alpha", "grad_p"):
            assert bool((res[key][n, un:, :] == 0).all()), (key, n)
            assert bool((res[key][n, :, tn:] == 0).all()), (key, n)
        assert bool((res["grad_alpha0"][n, un:] == 0).all())
        if case["preserve"]:
            # The last valid token is absorbing: p there has no effect.
            assert bool((res["grad_p"][n, un - 1, :] == 0).all())


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_interpreter_matches_oracle(interp: dict[str, Any], name: str) -> None:
    _check_against_oracle(CASES[name], _result(interp, name))


@pytest.mark.parametrize("name", ["float32_drop", "bfloat16_preserve", "float16_drop"])
def test_precision_at_most_k_times_torch_spec(interp: dict[str, Any], name: str) -> None:
    """Error vs the float64 oracle <= 4x that of the pure-torch spec run in the same dtype."""
    from speechattn.functional.monotonic import _torch_sma_forward

    case, res = CASES[name], _result(interp, name)
    ref = oracle_with_grads(case)["alpha"]
    spec = _torch_sma_forward(
        case["p"], case["alpha0"], case["text_lengths"], case["mel_lengths"], case["preserve"]
    )
    err_kernel = float((res["alpha"].double() - ref).abs().max())
    err_spec = float((spec.double() - ref).abs().max())
    floor = torch.finfo(case["p"].dtype).eps * float(ref.abs().max())
    assert err_kernel <= 4 * max(err_spec, floor), (err_kernel, err_spec, floor)


def test_preserve_columns_sum_to_one(interp: dict[str, Any]) -> None:
    for name in ("one_block_preserve", "three_blocks_preserve", "exact_block_preserve"):
        case, res = CASES[name], _result(interp, name)
        for n in range(case["p"].shape[0]):
            un, tn = int(case["text_lengths"][n]), int(case["mel_lengths"][n])
            cols = res["alpha"][n, :, :tn].sum(0)
            expected = case["alpha0"][n, :un].sum()  # the valid part of alpha0 is all the mass
            torch.testing.assert_close(cols, expected.expand(tn), rtol=1e-12, atol=1e-12)


def test_drop_loses_mass_past_last_token(interp: dict[str, Any]) -> None:
    case, res = CASES["one_block_drop"], _result(interp, "one_block_drop")
    cols = res["alpha"][0].sum(0)  # item 0 is full length
    assert bool((cols[1:] <= cols[:-1] + 1e-12).all()), "column mass must not grow"
    assert float(cols[-1]) < float(case["alpha0"][0].sum()) - 1e-6, "drop mode must lose mass"


@pytest.mark.parametrize("name", ["gradcheck_drop", "gradcheck_preserve"])
def test_interpreter_gradcheck(interp: dict[str, Any], name: str) -> None:
    assert _result(interp, name)["ok"] is True


def test_interpreter_compile_and_opcheck(interp: dict[str, Any]) -> None:
    case, res = CASES["compile_preserve"], _result(interp, "compile_preserve")
    ref = oracle_with_grads(case)
    torch.testing.assert_close(res["value"], (ref["alpha"] * case["grad"]).sum())
    torch.testing.assert_close(res["grad_p"], ref["grad_p"])
    torch.testing.assert_close(res["grad_alpha0"], ref["grad_alpha0"])
    assert res["opcheck"], "opcheck returned no report"
    for test, outcome in res["opcheck"].items():
        assert outcome == "SUCCESS", (test, outcome)


FUNCTIONAL_CASES = [k for k, v in CASES.items() if v["kind"] == "functional"]


@pytest.mark.parametrize("name", FUNCTIONAL_CASES)
def test_functional_impl_triton_matches_reference(interp: dict[str, Any], name: str) -> None:
    """stepwise_monotonic_alignment(impl="triton") vs the float64 reference and impl="torch"."""
    from reference.sma_reference import sma_reference_tensor
    from speechattn.functional import stepwise_monotonic_alignment

    case, res = CASES[name], _result(interp, name)
    hard, preserve = case["mode"] == "hard", case["mass"] == "preserve"
    a0 = case.get("initial_alignment")
    ref = sma_reference_tensor(
        case["p"],
        case["text_lengths"],
        case["mel_lengths"],
        preserve=preserve,
        hard=hard,
        alpha0=a0,
    )
    rtol, atol = _tolerances(case["p"].dtype)
    assert res["alpha"].dtype == case["p"].dtype
    torch.testing.assert_close(res["alpha"].double(), ref, rtol=rtol, atol=atol)
    if hard:
        assert res["requires_grad"] is False
        assert bool(((res["alpha"] == 0) | (res["alpha"] == 1)).all())
        if preserve:
            # Integer durations = row sums of the hard path; they fill every valid frame.
            from speechattn.functional import alignment_to_durations

            dur = alignment_to_durations(res["alpha"], case["text_lengths"], case["mel_lengths"])
            assert dur.dtype == torch.int64
            expected = case["mel_lengths"][:, None].expand(dur.shape[:2])
            torch.testing.assert_close(dur.sum(-1), expected)
        return
    # Gradients against the pure-torch spec (sma-core's adjoint) in the same dtype.
    p = case["p"].clone().requires_grad_(True)
    inputs = [p] if a0 is None else [p, a0.clone().requires_grad_(True)]
    out = stepwise_monotonic_alignment(
        p,
        case["text_lengths"],
        case["mel_lengths"],
        mode="soft",
        mass=case["mass"],
        initial_alignment=None if a0 is None else inputs[1],
        impl="torch",
    )
    grads = torch.autograd.grad((out * case["grad"]).sum(), inputs)
    torch.testing.assert_close(res["grad_p"], grads[0], rtol=rtol * 10, atol=atol * 10)
    if a0 is not None:
        torch.testing.assert_close(res["grad_alpha0"], grads[1], rtol=rtol * 10, atol=atol * 10)


def test_oracle_agrees_with_sma_core_reference() -> None:
    """The differentiable loop oracle here and tests/reference/sma_reference.py agree."""
    from reference.sma_reference import sma_reference_tensor

    for name in ("three_blocks_drop", "exact_block_preserve"):
        case = CASES[name]
        mine = oracle(
            case["p"], case["alpha0"], case["text_lengths"], case["mel_lengths"], case["preserve"]
        )
        theirs = sma_reference_tensor(
            case["p"],
            case["text_lengths"],
            case["mel_lengths"],
            preserve=case["preserve"],
            alpha0=case["alpha0"],
        )
        torch.testing.assert_close(mine, theirs, rtol=1e-13, atol=1e-13)


def test_auto_picks_triton_on_cuda_without_importing_it() -> None:
    from speechattn.kernels import _auto_sma_kernel, sma_kernel_names

    assert "triton" in sma_kernel_names()
    assert _auto_sma_kernel("cuda") == "triton"
    assert _auto_sma_kernel("cpu") != "triton"


def test_importing_speechattn_does_not_import_triton(interp: dict[str, Any]) -> None:
    # Recorded by the worker right after start-up, before it touches any kernel.
    assert interp["_meta"]["triton_imported_by_speechattn"] is False


def test_cpu_without_interpreter_raises_clear_error() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter enabled in this process")
    from speechattn.kernels import _triton_sma_ops

    case = CASES["one_block_drop"]
    with pytest.raises(ValueError, match="CUDA device"):
        _triton_sma_ops.sma_triton_forward(
            case["p"], case["alpha0"], case["text_lengths"], case["mel_lengths"], False
        )


# --------------------------------------------------------------------------------------------
# CUDA (compiled kernels), skipped cleanly without a GPU
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", [k for k, v in CASES.items() if v["kind"] == "kernel"])
def test_cuda_matches_oracle(name: str) -> None:
    from speechattn.kernels._triton_sma import sma_backward, sma_forward

    case = CASES[name]
    dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    kw = {"block_u": case["block_u"], "shift": case["shift"]}
    alpha = sma_forward(
        dev["p"], dev["alpha0"], dev["text_lengths"], dev["mel_lengths"], case["preserve"], **kw
    )
    grad_p, grad_alpha0 = sma_backward(
        dev["grad"],
        dev["p"],
        alpha,
        dev["alpha0"],
        dev["text_lengths"],
        dev["mel_lengths"],
        case["preserve"],
        **kw,
    )
    res = {"alpha": alpha.cpu(), "grad_p": grad_p.cpu(), "grad_alpha0": grad_alpha0.cpu()}
    _check_against_oracle(case, res)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_large_u_many_warps() -> None:
    """U = 400 (512-token block, 4 warps) and U = 1500 (two 1024-token blocks): vs torch loop."""
    from speechattn.kernels._triton_sma import sma_backward, sma_forward

    for U, T in ((400, 600), (1500, 1700)):
        case = make_case(80 + U, 2, U, T, preserve=True)
        dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
        alpha = sma_forward(dev["p"], dev["alpha0"], dev["text_lengths"], dev["mel_lengths"], True)
        # Vectorised float64 reference (same equation, frame loop in torch).
        ref = torch.zeros_like(case["p"])
        for n in range(2):
            un, tn = int(case["text_lengths"][n]), int(case["mel_lengths"][n])
            p = case["p"][n, :un, :tn].clone()
            p[un - 1] = 1.0
            a = case["alpha0"][n, :un].clone()
            for t in range(tn):
                leave = a * (1 - p[:, t])
                a = a * p[:, t] + torch.cat([a.new_zeros(1), leave[:-1]])
                ref[n, :un, t] = a
        torch.testing.assert_close(alpha.cpu(), ref, rtol=1e-10, atol=1e-12)
        gp, ga = sma_backward(
            dev["grad"],
            dev["p"],
            alpha,
            dev["alpha0"],
            dev["text_lengths"],
            dev["mel_lengths"],
            True,
        )
        assert bool(torch.isfinite(gp).all()) and bool(torch.isfinite(ga).all())


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_kernels_do_not_sync() -> None:
    from speechattn.kernels import _triton_sma_ops  # noqa: F401

    case = make_case(90, 4, 20, 50, preserve=True, dtype=torch.float32)
    dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    p = dev["p"].clamp(0, 1).requires_grad_(True)
    op = torch.ops.speechattn.sma_triton_forward
    op(p, dev["alpha0"], dev["text_lengths"], dev["mel_lengths"], True)  # warm up (compile)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        alpha = op(p, dev["alpha0"], dev["text_lengths"], dev["mel_lengths"], True)
        (alpha * dev["grad"]).sum().backward()
        # Hard mode: binarised p through the same kernel from a one-hot start; durations = row sums.
        one_hot = torch.zeros_like(dev["alpha0"])
        one_hot[:, 0] = 1.0
        p_hard = (p.detach() > 0.5).to(p.dtype)
        hard = op(p_hard, one_hot, dev["text_lengths"], dev["mel_lengths"], True)
        durations = hard.sum(-1).round().to(torch.int64)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(((hard == 0) | (hard == 1)).all())
    torch.testing.assert_close(durations.sum(-1), dev["mel_lengths"])


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mass", ["drop", "preserve"])
def test_cuda_functional_auto_is_triton_and_matches_torch(dtype: torch.dtype, mass: str) -> None:
    from speechattn.functional import stepwise_monotonic_alignment
    from speechattn.kernels import _auto_sma_kernel

    assert _auto_sma_kernel("cuda") == "triton"
    g = torch.Generator().manual_seed(5)
    B, H, U, T = 3, 4, 70, 160
    p = torch.rand(B, H, U, T, generator=g).to("cuda", dtype)
    grad = torch.randn(B, H, U, T, generator=g).to("cuda", dtype)
    text_lengths = torch.tensor([U, 33, 1], device="cuda")
    mel_lengths = torch.tensor([T, 90, 5], device="cuda")
    outs = {}
    for impl in ("auto", "torch"):
        x = p.clone().requires_grad_(True)
        alpha = stepwise_monotonic_alignment(x, text_lengths, mel_lengths, mass=mass, impl=impl)
        assert alpha.dtype == dtype
        (grad_x,) = torch.autograd.grad((alpha * grad).sum(), (x,))
        outs[impl] = (alpha.float().cpu(), grad_x.float().cpu())
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-3}
    torch.testing.assert_close(outs["auto"][0], outs["torch"][0], **tol)
    torch.testing.assert_close(outs["auto"][1], outs["torch"][1], **tol)


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_op_under_inductor_compile() -> None:
    from speechattn.kernels import _triton_sma_ops  # noqa: F401

    case = make_case(95, 3, 20, 40, preserve=True, dtype=torch.float32)
    dev = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in case.items()}
    op = torch.ops.speechattn.sma_triton_forward

    def loss(p: torch.Tensor, a0: torch.Tensor) -> torch.Tensor:
        return (op(p.clamp(0, 1), a0, dev["text_lengths"], dev["mel_lengths"], True) ** 2).sum()

    results = []
    for fn in (loss, torch.compile(loss, fullgraph=True)):
        p = dev["p"].clone().requires_grad_(True)
        a0 = dev["alpha0"].clone().requires_grad_(True)
        value = fn(p, a0)
        results.append((value.detach(), *torch.autograd.grad(value, (p, a0))))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
