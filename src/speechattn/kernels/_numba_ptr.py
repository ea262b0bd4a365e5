"""Two numba intrinsics for kernels driven through a raw ``int64`` block (see
:mod:`speechattn.kernels._omp`): an atomic fetch-and-add and integer address -> typed pointer."""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["fetch_add", "int_to_ptr"]


def _fetch_add(typingctx: Any, ptr: Any, slot: Any, value: Any) -> Any:  # pragma: no cover
    """``old = ((int64*)ptr)[slot]; ((int64*)ptr)[slot] += value`` atomically (sequentially
    consistent); returns ``old``."""
    ok = isinstance(ptr, types.RawPointer)
    if not (ok and isinstance(slot, types.Integer) and isinstance(value, types.Integer)):
        return None
    sig = types.int64(ptr, types.int64, types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        base = builder.bitcast(args[0], ir.IntType(64).as_pointer())
        return builder.atomic_rmw("add", builder.gep(base, [args[1]]), args[2], "seq_cst")

    return sig, codegen


def _int_to_ptr(typingctx: Any, address: Any, dtype: Any) -> Any:  # pragma: no cover - compiled
    """Typed data pointer ``dtype*`` from an integer address (for ``numba.carray``)."""
    if isinstance(dtype, types.DType):
        target = dtype.dtype
    elif isinstance(dtype, types.NumberClass):
        target = dtype.instance_type
    else:
        return None
    if not isinstance(address, types.Integer):
        return None
    ptr_type = types.CPointer(target)
    sig = ptr_type(address, dtype)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(ptr_type))

    return sig, codegen


# numba intrinsics (callable from compiled code only)
fetch_add: Any = intrinsic(_fetch_add)
int_to_ptr: Any = intrinsic(_int_to_ptr)
