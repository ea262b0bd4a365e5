"""Optional fast paths, lazily imported, each with a pure-torch twin.

Nothing here compiles or imports a heavy backend at import time.

Stepwise monotonic alignment (SMA) kernels follow one contract (heads flattened into
``N = B * H``, contiguous float32/float64 tensors on one device)::

    forward(p (N, U, T), alpha0 (N, U), text_lengths int64 (N,), mel_lengths int64 (N,),
            preserve: bool) -> alpha (N, U, T)
    backward(grad_alpha (N, U, T), p, alpha, alpha0, text_lengths, mel_lengths,
             preserve: bool) -> (grad_p (N, U, T), grad_alpha0 (N, U))

Kernels register with :func:`register_sma_kernel`; a backend whose module should only be
imported on first use registers through ``_LAZY_SMA_KERNELS`` (name -> module path; importing
the module must call :func:`register_sma_kernel`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = ["SMAKernel", "available", "get_sma_kernel", "register_sma_kernel", "sma_kernel_names"]


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
