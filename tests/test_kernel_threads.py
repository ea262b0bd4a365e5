"""Thread dispatch of the numba SMA kernels: torch's OpenMP team vs Python threads vs serial.

Every path must give bitwise the same result (each item is computed by one thread with the
same code); the team path must fall back cleanly and never deadlock.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from speechattn.functional import stepwise_monotonic_alignment
from speechattn.kernels import _numba_sma, _omp


def _case(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    B, U, T = 7, 13, 37
    p = torch.rand(B, U, T, generator=g, dtype=dtype)
    tl = torch.randint(1, U + 1, (B,), generator=g)
    ml = torch.randint(1, T + 1, (B,), generator=g)
    a0 = torch.rand(B, U, generator=g, dtype=dtype)
    grad = torch.randn(B, U, T, generator=g, dtype=dtype)
    return p, a0, tl, ml, grad


def _run_kernel(p: torch.Tensor, a0, tl, ml, grad, preserve: bool) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    alpha, ok = _numba_sma.forward_checked(p, a0, tl, ml, preserve)
    gp, ga0 = _numba_sma.backward(grad, p, alpha, a0, tl, ml, preserve)
    bcast = torch.ones((), dtype=p.dtype).expand(p.shape)  # the alpha.sum() gradient
    gpb, ga0b = _numba_sma.backward(bcast, p, alpha, a0, tl, ml, preserve)
    return alpha, ok, gp, ga0, gpb, ga0b


def _serial(*args):  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_kernel(*args)
    finally:
        torch.set_num_threads(before)


def _item_kernels(p: torch.Tensor, a0, tl, ml, grad, preserve: bool) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    """The per-item kernels called directly, item by item (numba dispatcher, numpy arrays, no
    entry point)."""
    N, U, T = p.shape
    pn, a0n = p.numpy(), a0.numpy()
    tln, mln = tl.numpy(), ml.numpy()
    int_type = np.int32 if pn.dtype == np.float32 else np.int64
    bits = pn.view(int_type)
    one_bits = int(np.array(1.0, dtype=pn.dtype).view(int_type))
    consts = _numba_sma._consts(T, p.dtype).numpy()
    out, ok = np.empty_like(pn), np.empty(N, dtype=np.bool_)
    no_fr = np.empty(0, dtype=pn.dtype)  # no focus rates
    for n in range(N):
        ok[n] = _numba_sma._forward_item(
            pn, bits, one_bits, a0n, n, tln[n], mln[n], preserve, consts, out, True, no_fr
        )
    res = [torch.from_numpy(out), torch.from_numpy(ok)]
    for g, rows in ((grad.numpy().reshape(N * U, T), 1), (np.ones((1, T), dtype=pn.dtype), 0)):
        gp, ga0 = np.empty_like(pn), np.empty_like(a0n)
        for n in range(N):
            _numba_sma._backward_item(
                g, rows, pn, out, a0n, n, tln[n], mln[n], preserve, consts, gp, ga0
            )
        res += [torch.from_numpy(gp), torch.from_numpy(ga0)]
    return tuple(res)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preserve", [False, True])
def test_entry_point_equals_the_item_kernels(dtype: torch.dtype, preserve: bool) -> None:
    """The compiled entry point (atomic item claims over the int64 block) gives bitwise the
    per-item kernels' results."""
    p, a0, tl, ml, grad = _case(dtype, seed=4)
    ref = _item_kernels(p, a0, tl, ml, grad, preserve)
    for x, y in zip(ref, _serial(p, a0, tl, ml, grad, preserve)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("preserve", [False, True])
def test_team_python_threads_and_serial_are_bitwise_equal(
    two_threads: None, dtype: torch.dtype, preserve: bool
) -> None:
    p, a0, tl, ml, grad = _case(dtype)
    ref = _serial(p, a0, tl, ml, grad, preserve)
    _omp.set_mode("auto")
    team_expected = _omp.team() is not None
    calls = []
    real_run = _omp.team_run

    def counting_run(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_run(*args)

    for mode in ("auto", "python"):
        _omp.set_mode(mode)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_omp, "team_run", counting_run)
            got = _run_kernel(p, a0, tl, ml, grad, preserve)
        for x, y in zip(ref, got):
            assert torch.equal(x, y), mode
    # the team was used in "auto" mode (3 calls) where torch runs on libgomp, never in "python"
    assert len(calls) == (3 if team_expected else 0)


def test_team_is_found_when_torch_uses_libgomp() -> None:
    info = torch.__config__.parallel_info()
    _omp.set_mode("auto")
    if "parallel backend: OpenMP" in info and _omp._mapped_libgomp() is not None:
        assert _omp.team() is not None
        assert "OpenMP team" in _omp.describe()
    else:
        assert _omp.team() is None
        assert "Python threads" in _omp.describe()


@pytest.mark.parametrize(
    "why",
    ["not_openmp", "no_lib", "bad_lib", "env"],
)
def test_detector_failures_fall_back_to_python_threads(
    two_threads: None, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """Any failure to find torch's libgomp or its symbols selects the Python threads; results
    stay bitwise equal to the serial kernel."""
    if why == "not_openmp":
        monkeypatch.setattr(
            torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool"
        )
    elif why == "no_lib":
        monkeypatch.setattr(_omp, "_mapped_libgomp", lambda: None)
    elif why == "bad_lib":
        monkeypatch.setattr(_omp, "_mapped_libgomp", lambda: "/nonexistent/libgomp.so.1")
    else:
        monkeypatch.setenv("SPEECHATTN_KERNEL_THREADS", "python")
    monkeypatch.setattr(_omp, "_RESOLVED", False)
    monkeypatch.setattr(_omp, "_TEAM", None)
    monkeypatch.setattr(_omp, "_WHY", "")
    assert _omp.team() is None
    assert "Python threads" in _omp.describe()
    used = []
    real_pool_run = _numba_sma._pool_run

    def counting_pool_run(*args):  # type: ignore[no-untyped-def]
        used.append(1)
        return real_pool_run(*args)

    monkeypatch.setattr(_numba_sma, "_pool_run", counting_pool_run)
    p, a0, tl, ml, grad = _case(torch.float32, seed=1)
    got = _run_kernel(p, a0, tl, ml, grad, True)
    assert used, "the Python-thread fallback was not used"
    monkeypatch.undo()
    ref = _serial(p, a0, tl, ml, grad, True)
    for x, y in zip(ref, got):
        assert torch.equal(x, y)


def test_forked_child_does_not_use_the_parents_team(monkeypatch: pytest.MonkeyPatch) -> None:
    _omp.set_mode("auto")
    t = _omp.team()
    if t is None:
        pytest.skip("torch does not run on libgomp here")
    monkeypatch.setattr(t, "_pid", -1)  # as seen from a forked child
    assert _omp.team() is None
    assert "forked" in _omp.describe()


def test_busy_or_nested_team_runs_items_on_the_calling_thread(
    two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a parallel region (or while another Python thread holds the team) the call runs
    every item on the calling thread: same result, no deadlock."""
    _omp.set_mode("auto")
    t = _omp.team()
    if t is None:
        pytest.skip("torch does not run on libgomp here")
    p, a0, tl, ml, grad = _case(torch.float64, seed=2)
    ref = _serial(p, a0, tl, ml, grad, False)
    monkeypatch.setattr(t, "_in_parallel", lambda: 1)
    for x, y in zip(ref, _run_kernel(p, a0, tl, ml, grad, False)):
        assert torch.equal(x, y)
    monkeypatch.undo()
    assert t._lock.acquire(blocking=False)  # another Python thread's call in flight
    try:
        for x, y in zip(ref, _run_kernel(p, a0, tl, ml, grad, False)):
            assert torch.equal(x, y)
    finally:
        t._lock.release()


def test_concurrent_calls_from_python_threads_do_not_deadlock(two_threads: None) -> None:
    cases = [_case(torch.float32, seed=s) for s in range(4)]
    refs = [_serial(*c, True) for c in cases]
    results: dict[int, list[tuple[torch.Tensor, ...]]] = {i: [] for i in range(4)}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(10):
                results[i].append(_run_kernel(*cases[i], True))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "kernel calls from Python threads deadlocked"
    assert not errors, errors
    for i in range(4):
        assert len(results[i]) == 10
        for got in results[i]:
            for x, y in zip(refs[i], got):
                assert torch.equal(x, y)


def test_gradcheck_on_the_team_path(two_threads: None) -> None:
    g = torch.Generator().manual_seed(3)
    p = torch.rand(3, 4, 6, generator=g, dtype=torch.float64) * 0.8 + 0.1
    p.requires_grad_(True)
    a0 = torch.softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), -1)
    a0.requires_grad_(True)
    tl, ml = torch.tensor([4, 2, 3]), torch.tensor([6, 5, 3])
    for mass in ("drop", "preserve"):
        assert torch.autograd.gradcheck(
            lambda p, a0, mass=mass: stepwise_monotonic_alignment(
                p, tl, ml, mass=mass, initial_alignment=a0, impl="numba"
            ),
            (p, a0),
        )


def test_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="Expected mode"):
        _omp.set_mode("openmp")


class _FakeGomp:
    """Stands in for libgomp: ``GOMP_parallel`` records calls and marks them late or not."""

    def __init__(self) -> None:
        self.late = True
        self.calls = 0
        self.block: np.ndarray | None = None

        def parallel(fn: int, address: int, threads: int, flags: int) -> None:
            self.calls += 1
            assert self.block is not None and address == self.block.ctypes.data
            self.block[_omp.LATE_SLOT] = 1 if self.late else 0

        self.GOMP_parallel = parallel
        self.omp_in_parallel = lambda: 0


def test_team_backs_off_to_the_calling_thread_when_workers_arrive_late() -> None:
    """Two calls in a row with a thread that found no work: the next calls run on the calling
    thread (1, then 2, 4, ... up to 64 while it persists); a call where every thread found work
    resets the back-off."""
    lib = _FakeGomp()
    team = _omp.OmpTeam(lib, "fake")  # type: ignore[arg-type]
    block = np.zeros(24, dtype=np.int64)
    lib.block = block
    ran = [team.run(0, block, 2) for _ in range(12)]
    # late, late -> skip 1; late, late -> skip 2; late, late -> skip 4 ...
    assert ran == [True, True, False, True, True, False, False, True, True] + [False] * 3
    assert lib.calls == ran.count(True)
    lib.late = False
    while not team.run(0, block, 2):  # the skipped calls run out
        pass
    assert team._backoff == 1 and team._skip == 0
    assert all(team.run(0, block, 2) for _ in range(5))
    assert _omp._MAX_BACKOFF == 64


def test_torchs_own_libgomp_is_preferred(tmp_path) -> None:  # type: ignore[no-untyped-def]
    site = tmp_path / "site-packages"
    torch_dir = site / "torch"
    (torch_dir / "lib").mkdir(parents=True)
    own = str(torch_dir / "lib" / "libgomp-a1b2.so.1")
    other = str(site / "scikit_learn.libs" / "libgomp-c3d4.so.1")
    system = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    assert _omp._pick_libgomp([other, own, own], str(torch_dir)) == own
    assert _omp._pick_libgomp([system, system], str(torch_dir)) == system  # conda / system build
    assert _omp._pick_libgomp([other, system], str(torch_dir)) is None  # ambiguous: fall back
    assert _omp._pick_libgomp([], str(torch_dir)) is None
    audio = str(site / "torchaudio.libs" / "libgomp-e5f6.so.1")  # not torch's own
    assert _omp._pick_libgomp([audio, other], str(torch_dir)) is None
    wheel = str(site / "torch.libs" / "libgomp-a1b2.so.1")
    assert _omp._pick_libgomp([audio, wheel], str(torch_dir)) == wheel


def test_info_names_the_dispatch() -> None:
    from speechattn.kernels import available

    _omp.set_mode("auto")
    line = available()["numba threads"]
    assert line.startswith("SMA recurrence items on ")
    assert ("OpenMP team" in line) == (_omp.team() is not None)


@pytest.mark.parametrize("preserve", [False, True])
def test_broadcast_gradient_backward_equals_dense_and_float64_spec(preserve: bool) -> None:
    """The backward's shared-row loop (a broadcast incoming gradient, full four-row blocks)
    gives the dense-gradient result and the float64 torch spec's gradient."""
    p, a0, tl, ml, _ = _case(torch.float64, seed=9)
    tl[0], tl[1], tl[2] = 13, 4, 9  # full blocks only, and blocks with a partial top
    value = 0.75
    alpha, _ = _numba_sma.forward_checked(p, a0, tl, ml, preserve)
    bcast = torch.full((), value, dtype=p.dtype).expand(p.shape)
    gp_b, ga0_b = _numba_sma.backward(bcast, p, alpha, a0, tl, ml, preserve)
    gp_d, ga0_d = _numba_sma.backward(bcast.contiguous(), p, alpha, a0, tl, ml, preserve)
    torch.testing.assert_close(gp_b, gp_d, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ga0_b, ga0_d, rtol=1e-13, atol=1e-13)
    x = p.clone().requires_grad_(True)
    x0 = a0.clone().requires_grad_(True)
    mass = "preserve" if preserve else "drop"
    ref = stepwise_monotonic_alignment(x, tl, ml, mass=mass, initial_alignment=x0, impl="torch")
    (ref.sum() * value).backward()
    assert x.grad is not None and x0.grad is not None
    valid = (torch.arange(p.shape[1])[None, :, None] < tl[:, None, None]) & (
        torch.arange(p.shape[2])[None, None, :] < ml[:, None, None]
    )
    torch.testing.assert_close(gp_b, torch.where(valid, x.grad, 0), rtol=1e-10, atol=1e-12)
    tok = torch.arange(p.shape[1])[None] < tl[:, None]
    torch.testing.assert_close(ga0_b, torch.where(tok, x0.grad, 0), rtol=1e-10, atol=1e-12)
