"""Optional fast paths, lazily imported, each with a pure-torch twin.

Nothing here compiles or imports a heavy backend at import time.
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["available"]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available() -> dict[str, str]:
    """Which fast paths this installation can use, with a short reason for each.

    Returns:
        ``{name: "yes" | "no (<reason>)"}`` for numba (CPU), triton (CUDA) and cuda.
    """
    out: dict[str, str] = {}
    out["numba"] = "yes (CPU)" if _has("numba") else "no (pip install numba)"
    cuda = torch.cuda.is_available()
    out["cuda"] = f"yes ({torch.cuda.get_device_name(0)})" if cuda else "no (no CUDA device)"
    if not _has("triton"):
        out["triton"] = "no (pip install speechattn[triton])"
    elif not cuda:
        out["triton"] = (
            "installed; used on CUDA tensors only (TRITON_INTERPRET=1 runs it on CPU for tests)"
        )
    else:
        out["triton"] = "yes (CUDA)"
    return out
