"""Optional fast paths, lazily imported, each with a pure-torch twin: the one kernel registry.

Every compiled or tiled path of the package lives in this package and is reached through this
registry; :mod:`speechattn.functional` holds the readable pure-torch specification of each
mechanism (``impl="torch"``) and asks :func:`resolve` / :func:`load` for anything faster.
Nothing here compiles or imports a heavy backend at import time: a kernel module is imported on
first use, and numba compiles on the first call (or loads its on-disk cache, see :func:`warmup`).

Ops and their implementations (``impl=`` values besides ``"auto"`` and ``"torch"``)::

    sma                    numba (CPU), triton (CUDA)     functional.stepwise_monotonic_alignment
    viterbi                numba (CPU)                    monotonic_alignment_search,
                                                          monotonic_hmm_viterbi, monotonic_viterbi
    hmm_forward_backward   numba (CPU)                    monotonic_hmm_log_likelihood
    attentive_pool         numba (CPU), tiled (any)       attentive_pool_mean_std (ASTP, MHASTP,
                                                          MQMHASTP)
    head_attentive_stats   fused (any)                    head_attentive_statistics (ASP)
    prior_attention        varlen (any)                   prior_attention (impl="varlen"; "torch"
                                                          is its SDPA / explicit path)

:func:`implementations` lists them with their availability (``speechattn info`` prints it).

Stepwise monotonic alignment (SMA) kernels follow one contract (heads flattened into
``N = B * H``, contiguous float32/float64 tensors on one device)::

    forward(p (N, U, T), alpha0 (N, U), text_lengths int64 (N,), mel_lengths int64 (N,),
            preserve: bool) -> alpha (N, U, T)
    backward(grad_alpha (N, U, T), p, alpha, alpha0, text_lengths, mel_lengths,
             preserve: bool) -> (grad_p (N, U, T), grad_alpha0 (N, U))

Three optional capabilities, read with ``getattr`` by the functional wrappers: ``forward.checked``
(same arguments, returns ``(alpha, ok)`` with ``ok`` a bool ``(N,)`` flagging items whose ``p``
may have a value outside [0, 1] or NaN (it may over-flag, e.g. -0.0): the range check fused into the forward pass; flagged
items are re-checked in torch for the error message), ``backward.accepts_strided_grad = True``
(``grad_alpha`` may be non-contiguous, e.g. the stride-0 broadcast from ``alpha.sum()``) and
``forward.focus(p, alpha0, text_lengths, mel_lengths, preserve, need_alpha) -> (alpha | None,
focus_rate (N,), ok)`` (the focus rate of each item's alignment from the same pass, alpha not
stored when ``need_alpha`` is False; used to rank the heads of
:func:`speechattn.functional.stepwise_monotonic_attention`).

Kernels register with :func:`register_sma_kernel`; a backend whose module should only be
imported on first use registers through ``_LAZY_SMA_KERNELS`` (name -> module path; importing
the module must call :func:`register_sma_kernel`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar, cast

import torch

__all__ = [
    "KernelSpec",
    "SMAKernel",
    "available",
    "get_sma_kernel",
    "implementations",
    "load",
    "register_sma_kernel",
    "resolve",
    "sma_kernel_names",
    "warmup",
]


_F = TypeVar("_F", bound=Callable[..., Any])


def _eager(fn: _F) -> _F:
    """Mark a compiled-kernel entry point (numba), or a kernel import, to run eagerly under
    ``torch.compile``: dynamo does not trace into it (numba's dispatch fails there on the first
    call in a process, and tracing a first import walks numba's own set-up) but breaks the graph
    around it; autograd is unchanged.

    Lazy and cheap: ``torch.compiler.disable`` imports dynamo (seconds, and triton with it)
    and costs microseconds per call, so the disabled twin is made and used only while dynamo
    traces the caller (``torch.compiler.is_compiling()``: a flag read); eager calls go straight
    to ``fn``.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        twin = _DISABLED.get(fn)
        if twin is None:
            twin = _DISABLED[fn] = torch.compiler.disable(fn)
        return twin(*args, **kwargs)

    return cast(_F, call)


_DISABLED: dict[Callable[..., Any], Callable[..., Any]] = {}


class SMAKernel(NamedTuple):
    """A registered stepwise-monotonic-alignment fast path (see the module docstring)."""

    name: str
    forward: Callable[..., torch.Tensor]
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    devices: tuple[str, ...]


_SMA_KERNELS: dict[str, SMAKernel] = {}

# name -> (module imported on first use, devices it serves, module that must be importable).
# Other backends append their line here (e.g. "triton": ("speechattn.kernels._triton_sma", ...)).
_LAZY_SMA_KERNELS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "numba": ("speechattn.kernels._numba_sma", ("cpu",), "numba"),
    "triton": ("speechattn.kernels._triton_sma_ops", ("cuda",), "triton"),
}


def register_sma_kernel(
    name: str,
    forward: Callable[..., torch.Tensor],
    backward: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    devices: Sequence[str] = ("cpu",),
) -> None:
    """Register an SMA fast path under ``name`` for the given device types.

    Args:
        name: the ``impl=`` string that selects it (``"numba"``, ``"triton"``, ...).
        forward: ``forward(p, alpha0, text_lengths, mel_lengths, preserve) -> alpha``.
        backward: ``backward(grad_alpha, p, alpha, alpha0, text_lengths, mel_lengths, preserve)
            -> (grad_p, grad_alpha0)``.
        devices: device types (``"cpu"``, ``"cuda"``) whose tensors it accepts.
    """
    if name == "torch" or name == "auto":
        raise ValueError(f"Kernel name {name!r} is reserved; pick another name.")
    _SMA_KERNELS[name] = SMAKernel(name, forward, backward, tuple(devices))


def sma_kernel_names() -> list[str]:
    """Names of SMA kernels registered or registrable on first use."""
    return sorted(set(_SMA_KERNELS) | set(_LAZY_SMA_KERNELS))


def _sma_kernel_installable(name: str) -> bool:
    if name in _SMA_KERNELS:
        return True
    lazy = _LAZY_SMA_KERNELS.get(name)
    return lazy is not None and _has(lazy[2])


def _sma_kernel_serves(name: str, device_type: str) -> bool:
    if name in _SMA_KERNELS:
        return device_type in _SMA_KERNELS[name].devices
    lazy = _LAZY_SMA_KERNELS.get(name)
    return lazy is not None and device_type in lazy[1]


@_eager
def get_sma_kernel(name: str) -> SMAKernel:
    """Return the SMA kernel ``name``, importing its module on first use.

    Raises:
        ValueError: unknown name, or its backend is not installed.
    """
    if name not in _SMA_KERNELS:
        lazy = _LAZY_SMA_KERNELS.get(name)
        if lazy is None:
            raise ValueError(
                f"Unknown SMA impl {name!r}; expected 'auto', 'torch' or one of {sma_kernel_names()}."
            )
        if not _has(lazy[2]):
            raise ValueError(
                f"impl={name!r} needs the {lazy[2]!r} package, which is not installed; "
                f"pip install {lazy[2]} or pass impl='torch'."
            )
        importlib.import_module(lazy[0])
        if name not in _SMA_KERNELS:  # pragma: no cover - a broken backend module
            raise RuntimeError(f"Importing {lazy[0]} did not register the {name!r} SMA kernel.")
    return _SMA_KERNELS[name]


def _auto_sma_kernel(device_type: str) -> str:
    """The name ``impl="auto"`` resolves to on ``device_type``: triton on CUDA, numba on CPU."""
    preferred = {"cuda": ("triton",), "cpu": ("numba",)}.get(device_type, ())
    for name in preferred:
        if _sma_kernel_installable(name) and _sma_kernel_serves(name, device_type):
            return name
    return "torch"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # pragma: no cover
        return False


def available() -> dict[str, str]:
    """Which fast paths this installation can use, with a short reason for each.

    Returns:
        ``{name: "yes" | "no (<reason>)"}`` for numba (CPU), triton (CUDA) and cuda.
    """
    out: dict[str, str] = {}
    out["numba"] = (
        "yes (CPU; SMA recurrence, Viterbi, attentive pooling statistics; compiled on first use, cached)"
        if _has("numba")
        else "no (pip install numba)"
    )
    if _has("numba"):
        from speechattn.kernels._omp import describe

        out["numba threads"] = f"SMA recurrence {describe()}"
    cuda = torch.cuda.is_available()
    out["cuda"] = f"yes ({torch.cuda.get_device_name(0)})" if cuda else "no (no CUDA device)"
    if not _has("triton"):
        out["triton"] = "no (pip install speechattn[triton])"
    elif not cuda:
        out["triton"] = (
            "installed; used on CUDA tensors only (TRITON_INTERPRET=1 runs it on CPU for tests)"
        )
    else:
        out["triton"] = "yes (CUDA; SMA recurrence forward/backward, custom ops)"
    if _has("triton"):
        out["triton"] += f" [triton {_dist_version('triton')}]"
    return out


def _dist_version(dist: str) -> str:
    """Installed version of a distribution, without importing it."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # pragma: no cover - broken metadata
        return "unknown"


# ---------------------------------------------------------------------------------------------
# The op registry (every op but SMA, whose kernels register themselves, see above)
# ---------------------------------------------------------------------------------------------


class KernelSpec(NamedTuple):
    """One registered implementation of an op.

    Attributes:
        op: the op name (``"viterbi"``, ``"attentive_pool"``, ...).
        name: the ``impl=`` string that selects it.
        module: module imported on first use (it exposes the op's entry points).
        devices: device types whose tensors it accepts.
        requires: a package that must be importable, or None.
        dtypes: floating dtypes it accepts (None: any).
        summary: one line for ``speechattn info``.
    """

    op: str
    name: str
    module: str
    devices: tuple[str, ...]
    requires: str | None
    dtypes: tuple[torch.dtype, ...] | None
    summary: str


_F32_64 = (torch.float32, torch.float64)
_ANY_DEVICE = ("cpu", "cuda", "mps", "xpu")

# op -> impl name -> spec; the order is the "auto" preference (first that serves the input).
_OPS: dict[str, dict[str, KernelSpec]] = {
    "viterbi": {
        "numba": KernelSpec(
            "viterbi",
            "numba",
            "speechattn.kernels._numba_align",
            ("cpu",),
            "numba",
            None,
            "compiled monotonic Viterbi in float64, items on torch's threads",
        ),
    },
    "hmm_forward_backward": {
        "numba": KernelSpec(
            "hmm_forward_backward",
            "numba",
            "speechattn.kernels._numba_align",
            ("cpu",),
            "numba",
            None,
            "compiled forward-backward in float64, gradients = posteriors",
        ),
    },
    "attentive_pool": {
        "numba": KernelSpec(
            "attentive_pool",
            "numba",
            "speechattn.kernels._tiled_pool",
            ("cpu",),
            "numba",
            _F32_64,
            "batch-tiled MLP + softmax in torch, statistics and their gradients in numba",
        ),
        "tiled": KernelSpec(
            "attentive_pool",
            "tiled",
            "speechattn.kernels._tiled_pool",
            _ANY_DEVICE,
            None,
            None,
            "batch-tiled autograd engine, in-place torch ops into reused buffers",
        ),
    },
    "prior_attention": {
        "varlen": KernelSpec(
            "prior_attention",
            "varlen",
            "speechattn.kernels._varlen_attention",
            _ANY_DEVICE,
            None,
            _F32_64,
            "per-item blocks of the valid region only, explicit softmax-attention backward",
        ),
    },
    "head_attentive_stats": {
        "fused": KernelSpec(
            "head_attentive_stats",
            "fused",
            "speechattn.kernels._tiled_pool",
            _ANY_DEVICE,
            None,
            None,
            "query-by-query softmax + statistics with a recomputing backward",
        ),
    },
}

# Legacy spellings accepted by the functional API.
_ALIASES: dict[tuple[str, str], str] = {("attentive_pool", "fused"): "tiled"}


def _op_names() -> list[str]:
    return ["sma", *_OPS]


def _sma_specs() -> dict[str, KernelSpec]:
    out: dict[str, KernelSpec] = {}
    for name in sma_kernel_names():
        lazy = _LAZY_SMA_KERNELS.get(name)
        if lazy is not None:
            module, devices, req = lazy
        else:
            module, devices, req = "", _SMA_KERNELS[name].devices, ""
        summary = {
            "numba": "compiled recurrence forward/backward, items on torch's OpenMP team where available",
            "triton": "Triton recurrence forward/backward, torch custom ops",
        }.get(name, "registered kernel")
        out[name] = KernelSpec("sma", name, module, tuple(devices), req or None, None, summary)
    return out


def _specs(op: str) -> dict[str, KernelSpec]:
    if op == "sma":
        return _sma_specs()
    if op not in _OPS:
        raise ValueError(f"Unknown op {op!r}; expected one of {_op_names()}.")
    return _OPS[op]


def _why_not(spec: KernelSpec) -> str | None:
    """None when ``spec`` can be loaded in this installation, else the reason."""
    if spec.requires is not None and not _has(spec.requires):
        return f"pip install {spec.requires}"
    return None


def resolve(
    op: str, impl: object, device_type: str = "cpu", dtype: torch.dtype | None = None
) -> str:
    """The implementation name that ``impl`` selects for ``op`` on this input.

    ``"auto"`` picks the first registered implementation that is installed and serves the
    device type and dtype, else ``"torch"`` (the spec in :mod:`speechattn.functional`). A named
    implementation is checked and returned as is.

    Args:
        op: ``"viterbi"``, ``"hmm_forward_backward"``, ``"attentive_pool"``,
            ``"head_attentive_stats"`` or ``"sma"``.
        impl: ``"auto"``, ``"torch"`` or an implementation name.
        device_type: the input's device type (``"cpu"``, ``"cuda"``, ...).
        dtype: the input's dtype, or None to skip the dtype check.

    Raises:
        TypeError: impl is not a string.
        ValueError: unknown op or impl, its package missing, or it cannot take this input.
    """
    if not isinstance(impl, str):
        raise TypeError(f"Expected impl to be a string ('auto', 'torch', ...); found {impl!r}.")
    if op == "sma":
        if impl == "auto":
            return _auto_sma_kernel(device_type)
        if impl != "torch" and impl not in sma_kernel_names():
            raise ValueError(
                f"Unknown SMA impl {impl!r}; expected 'auto', 'torch' or one of {sma_kernel_names()}."
            )
        return impl
    specs = _specs(op)
    impl = _ALIASES.get((op, impl), impl)
    if impl == "torch":
        return "torch"
    if impl == "auto":
        for cand in specs.values():
            if (
                _why_not(cand) is None
                and device_type in cand.devices
                and (dtype is None or cand.dtypes is None or dtype in cand.dtypes)
            ):
                return cand.name
        return "torch"
    spec = specs.get(impl)
    if spec is None:
        raise ValueError(
            f"Unknown impl {impl!r} for {op}; expected 'auto', 'torch' or one of {sorted(specs)}."
        )
    reason = _why_not(spec)
    if reason is not None:
        raise ValueError(
            f"impl={impl!r} for {op} needs the {spec.requires!r} package, which is not installed; "
            f"{reason} or pass impl='auto' / impl='torch'."
        )
    if device_type not in spec.devices:
        raise ValueError(
            f"impl={impl!r} for {op} runs on {'/'.join(spec.devices)} tensors; found a {device_type} "
            "tensor. Pass impl='auto' or impl='torch'."
        )
    if dtype is not None and spec.dtypes is not None and dtype not in spec.dtypes:
        raise ValueError(
            f"impl={impl!r} for {op} takes {'/'.join(str(d) for d in spec.dtypes)} tensors; found "
            f"{dtype}. Pass impl='auto' or impl='torch'."
        )
    return impl


@_eager
def load(op: str, name: str) -> Any:
    """Import and return the module that implements ``op`` as ``name`` (first use only imports).

    For ``op="sma"`` the :class:`SMAKernel` is returned instead.
    """
    if op == "sma":
        return get_sma_kernel(name)
    spec = _specs(op).get(_ALIASES.get((op, name), name))
    if spec is None:
        raise ValueError(f"Unknown impl {name!r} for {op}; expected one of {sorted(_specs(op))}.")
    return importlib.import_module(spec.module)


def implementations() -> dict[str, dict[str, str]]:
    """Every op with its implementations and whether this installation can use each.

    Returns:
        ``{op: {impl: "yes (<devices>; <summary>)" | "installed; not usable here (no <device>
        device; <devices>; <summary>)" | "no (<reason>)"}}``; ``"torch"`` (the pure-torch
        specification) is always available. "yes" only where a device it serves is present
        (triton on a machine without CUDA is installed, not usable).
    """
    out: dict[str, dict[str, str]] = {}
    for op in _op_names():
        row = {"torch": "yes (any device; the pure-torch specification)"}
        for name, spec in _specs(op).items():
            reason = _why_not(spec)
            where = "/".join(spec.devices) if spec.devices != _ANY_DEVICE else "any device"
            if reason is not None:
                row[name] = f"no ({reason})"
            elif spec.devices == _ANY_DEVICE or any(map(_device_present, spec.devices)):
                row[name] = f"yes ({where}; {spec.summary})"
            else:
                missing = " or ".join(d.upper() for d in spec.devices)
                row[name] = (
                    f"installed; not usable here (no {missing} device; {where}; {spec.summary})"
                )
        out[op] = row
    return out


def _device_present(device_type: str) -> bool:
    """Whether this machine has a device of ``device_type`` (``"cpu"`` always)."""
    if device_type == "cpu":
        return True
    if device_type == "mps":
        return bool(torch.backends.mps.is_available())
    module = getattr(torch, device_type, None)
    is_available = getattr(module, "is_available", None)
    return bool(is_available()) if callable(is_available) else False


# Modules with numba kernels; each exposes warmup() that compiles (or loads) all of them.
_NUMBA_MODULES = (
    "speechattn.kernels._numba_sma",
    "speechattn.kernels._numba_align",
    "speechattn.kernels._numba_pool",
)


def warmup() -> dict[str, float]:
    """Compile every numba kernel now (or load it from numba's on-disk cache).

    Numba's cache (``cache=True``) lives next to the kernel modules when that folder is
    writable, else in the user cache folder; ``NUMBA_CACHE_DIR`` overrides both. After one
    warm-up, later processes load the machine code instead of compiling.

    Returns:
        ``{module: seconds}`` spent per kernel module; empty when numba is not installed.
    """
    import time

    if not _has("numba"):
        return {}
    out: dict[str, float] = {}
    for mod in _NUMBA_MODULES:
        t0 = time.perf_counter()
        module = importlib.import_module(mod)
        warm = getattr(module, "warmup", None)
        if warm is not None:
            warm()
        else:  # a module without its own warm-up: run its registered kernel on a tiny input
            _warm_sma()
        out[mod] = time.perf_counter() - t0
    return out


def _warm_sma() -> None:
    kernel = get_sma_kernel("numba")
    for dt in (torch.float32, torch.float64):
        p = torch.full((1, 2, 3), 0.5, dtype=dt)
        a0 = torch.zeros(1, 2, dtype=dt)
        a0[0, 0] = 1.0
        tl, ml = torch.tensor([2]), torch.tensor([3])
        for preserve in (False, True):
            alpha = kernel.forward(p, a0, tl, ml, preserve)
            kernel.backward(torch.ones_like(alpha), p, alpha, a0, tl, ml, preserve)
