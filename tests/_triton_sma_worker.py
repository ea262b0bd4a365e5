"""Subprocess worker for tests/test_triton_sma.py: runs the Triton SMA kernels on CPU tensors.

Run as ``TRITON_INTERPRET=1 python tests/_triton_sma_worker.py IN.pt OUT.pt``. It must be a
separate process: ``TRITON_INTERPRET`` is read when ``triton.language`` is first imported (its own
``@triton.jit`` helpers such as ``tl.zeros`` are decorated then), so flipping the variable inside a
pytest process that already imported triton does not work, and setting it there would leak into
every later test. The worker only computes; every comparison is asserted in the test module.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import torch


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    from speechattn.kernels._triton_sma import sma_backward, sma_forward

    p, alpha0 = case["p"], case["alpha0"]
    tl_, ml_ = case["text_lengths"], case["mel_lengths"]
    kw = {"block_u": case.get("block_u"), "shift": case.get("shift")}
    alpha = sma_forward(p, alpha0, tl_, ml_, case["preserve"], **kw)
    grad_p, grad_alpha0 = sma_backward(
        case["grad"], p, alpha, alpha0, tl_, ml_, case["preserve"], **kw
    )
    return {"alpha": alpha, "grad_p": grad_p, "grad_alpha0": grad_alpha0}


def _run_op_case(case: dict[str, Any]) -> dict[str, Any]:
    """Through the registered custom op and autograd (what the functional API calls)."""
    from speechattn.kernels import _triton_sma_ops  # noqa: F401  (registers the ops)

    p = case["p"].clone().requires_grad_(True)
    alpha0 = case["alpha0"].clone().requires_grad_(True)
    alpha = torch.ops.speechattn.sma_triton_forward(
        p, alpha0, case["text_lengths"], case["mel_lengths"], case["preserve"]
    )
    grad_p, grad_alpha0 = torch.autograd.grad((alpha * case["grad"]).sum(), (p, alpha0))
    return {"alpha": alpha.detach(), "grad_p": grad_p, "grad_alpha0": grad_alpha0}


def _gradcheck(case: dict[str, Any]) -> dict[str, Any]:
    from speechattn.kernels import _triton_sma_ops  # noqa: F401

    p = case["p"].clone().requires_grad_(True)
    alpha0 = case["alpha0"].clone().requires_grad_(True)
    ok = torch.autograd.gradcheck(
        lambda p_, a_: torch.ops.speechattn.sma_triton_forward(
            p_, a_, case["text_lengths"], case["mel_lengths"], case["preserve"]
        ),
        (p, alpha0),
        fast_mode=True,
    )
    return {"ok": bool(ok)}


def _compile_and_opcheck(case: dict[str, Any]) -> dict[str, Any]:
    """torch.compile (fullgraph, aot_eager: traces fake + autograd registrations) and opcheck."""
    from speechattn.kernels import _triton_sma_ops  # noqa: F401

    op = torch.ops.speechattn.sma_triton_forward
    tl_, ml_, preserve = case["text_lengths"], case["mel_lengths"], case["preserve"]

    def loss(p_: torch.Tensor, a_: torch.Tensor) -> torch.Tensor:
        return (op(p_, a_, tl_, ml_, preserve) * case["grad"]).sum()

    p = case["p"].clone().requires_grad_(True)
    alpha0 = case["alpha0"].clone().requires_grad_(True)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    value = compiled(p, alpha0)
    grad_p, grad_alpha0 = torch.autograd.grad(value, (p, alpha0))
    report = torch.library.opcheck(
        op.default, (case["p"], case["alpha0"], tl_, ml_, preserve), raise_exception=False
    )
    return {
        "value": value.detach(),
        "grad_p": grad_p,
        "grad_alpha0": grad_alpha0,
        "opcheck": {k: str(v) for k, v in report.items()},
    }


def _run_functional(case: dict[str, Any]) -> dict[str, Any]:
    """The public API with impl="triton" (registered for CPU under the interpreter)."""
    from speechattn.functional import stepwise_monotonic_alignment

    p = case["p"].clone().requires_grad_(True)
    alpha0 = case.get("initial_alignment")
    inputs = [p] if alpha0 is None else [p, alpha0.clone().requires_grad_(True)]
    out = stepwise_monotonic_alignment(
        p,
        case["text_lengths"],
        case["mel_lengths"],
        mode=case["mode"],
        mass=case["mass"],
        initial_alignment=None if alpha0 is None else inputs[1],
        impl="triton",
    )
    res: dict[str, Any] = {"alpha": out.detach(), "requires_grad": out.requires_grad}
    if case["mode"] == "soft":
        grads = torch.autograd.grad((out * case["grad"]).sum(), inputs)
        res["grad_p"] = grads[0]
        if alpha0 is not None:
            res["grad_alpha0"] = grads[1]
    return res


_KINDS = {
    "kernel": _run_case,
    "op": _run_op_case,
    "gradcheck": _gradcheck,
    "compile": _compile_and_opcheck,
    "functional": _run_functional,
}


def main(argv: list[str]) -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("run with TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    # Checked first, before anything here imports triton: the package must import it lazily.
    import speechattn
    import speechattn.functional
    import speechattn.kernels
    import speechattn.nn  # noqa: F401

    results: dict[str, Any] = {"_meta": {"triton_imported_by_speechattn": "triton" in sys.modules}}
    cases = torch.load(argv[1])
    for name, case in cases.items():
        try:
            results[name] = _KINDS[case["kind"]](case)
        except Exception:  # reported per case; the test names the failing one
            results[name] = {"error": traceback.format_exc()}
    torch.save(results, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
