"""Padding content never changes an output or a gradient of stepwise monotonic attention.

Every path users can reach of :class:`speechattn.nn.StepwiseMonotonicMultiheadAttention` and of
:func:`speechattn.functional.stepwise_monotonic_attention` (head selection, tunable, modes,
need_weights, train/eval/no-grad, residual/LayerNorm, CPU recurrence implementations) runs with
the padded positions of query, key and value filled with zeros, large random values, and NaN
and +-inf. Every output, every parameter gradient and the inputs' gradients at valid positions must be
the same bits as with zero padding (the code path is the same: only padded content differs) and
finite; the inputs' gradients at padded positions must be exactly 0.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

import speechattn.functional.monotonic_attention as fm
import speechattn.nn.monotonic as nm
from speechattn.functional import stepwise_monotonic_attention, stepwise_stay_probability
from speechattn.functional.masks import lengths_to_valid_mask
from speechattn.nn import StepwiseMonotonicMultiheadAttention

IMPLS = ["torch"] + (["numba"] if importlib.util.find_spec("numba") is not None else [])
FILLS = ("large", "nonfinite")  # compared with zero padding

B, U, T = 3, 6, 14
Q_LEN = torch.tensor([6, 4, 3])
K_LEN = torch.tensor([14, 10, 7])  # >= Q_LEN: Viterbi paths exist


def _fill(x: Tensor, valid: Tensor, how: str, seed: int) -> Tensor:
    """``x`` with the positions where ``valid`` is False replaced according to ``how``.

    ``valid`` broadcasts against ``x`` (bool). ``"zeros"``, ``"large"`` (random values of
    magnitude about 1e4, a fixed draw), ``"nonfinite"`` (NaN, +inf and -inf in turn).
    """
    valid = valid.expand_as(x)
    if how == "zeros":
        pad = torch.zeros_like(x)
    elif how == "large":
        g = torch.Generator().manual_seed(seed)
        pad = torch.randn(x.shape, generator=g, dtype=x.dtype) * 1e4
    elif how == "nonfinite":
        pad = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=x.dtype)
        pad = pad.repeat(x.numel() // 3 + 1)[: x.numel()].view_as(x)
    else:  # pragma: no cover
        raise AssertionError(how)
    return torch.where(valid, x, pad)


def _same(a: Tensor | None, c: Tensor | None, what: str) -> None:
    """Bitwise equal and finite (or both ``None``)."""
    assert (a is None) == (c is None), what
    if a is None or c is None:
        return
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    assert a.dtype == c.dtype and a.shape == c.shape, what
    assert torch.equal(a, c), f"{what}: differs by {(a.double() - c.double()).abs().max().item()}"


def _compare(
    run: Callable[[str], tuple[dict[str, Tensor | None], dict[str, Tensor | None]]],
) -> None:
    """``run(fill) -> (outputs, gradients)``; every fill against zero padding."""
    ref_out, ref_grad = run("zeros")
    for v in ref_grad.values():
        assert v is None or torch.isfinite(v).all()
    for how in FILLS:
        out, grad = run(how)
        for name in ref_out:
            _same(out[name], ref_out[name], f"{how}: output {name}")
        for name in ref_grad:
            _same(grad[name], ref_grad[name], f"{how}: gradient of {name}")


# ----------------------------------------------------------------------------- the layer

_PHASES = ("train", "eval-soft", "eval-hard", "eval-viterbi", "no-grad")
_NORMS = ((False, False), (True, False), (False, True), (True, True))


def _layer(**options: Any) -> StepwiseMonotonicMultiheadAttention:
    """The layer under test, seeded: 8 dimensions, 2 heads, dropout 0.2 and noise 0.5 unless
    ``options`` say otherwise."""
    torch.manual_seed(0)
    kw: dict[str, Any] = {"embed_dim": 8, "num_heads": 2, "dropout": 0.2, "noise_std": 0.5}
    return StepwiseMonotonicMultiheadAttention(**(kw | options))


def _layer_cases() -> list[tuple[str, bool, bool, str, bool, bool, str]]:
    cases = []
    for sel, tunable in (("focus_rate", True), ("per_head", True), ("focus_rate", False)):
        phases = _PHASES if tunable else ("train", "eval-soft", "no-grad")
        for need in (True, False):
            for phase in phases:
                for residual, norm in _NORMS:
                    for impl in IMPLS:
                        cases.append((sel, tunable, need, phase, residual, norm, impl))
    return cases


def _run_layer(
    layer: StepwiseMonotonicMultiheadAttention,
    phase: str,
    need_weights: bool,
    fill: str,
    kdim: int,
    vdim: int,
    kv_same: bool = False,
    strided: bool = False,
) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
    g = torch.Generator().manual_seed(3)
    d = layer.embed_dim
    tok = lengths_to_valid_mask(Q_LEN, U)[..., None]
    frm = lengths_to_valid_mask(K_LEN, T)[..., None]
    query = _fill(torch.randn(B, U, d, generator=g), tok, fill, 11)
    key = _fill(torch.randn(B, T, kdim, generator=g), frm, fill, 12)
    value = _fill(torch.randn(B, T, vdim, generator=g), frm, fill, 13)
    w_out = torch.randn(B, U, d, generator=g)
    w_align = torch.randn(B, U, T, generator=g)
    w_heads = torch.randn(B, layer.num_heads, U, T, generator=g)
    grad_on = phase != "no-grad"
    if kv_same:  # one tensor as key and value (as ``layer(text, mel, mel)``)
        value = key
    if strided:  # the same values in a (b, f, n) memory layout: not contiguous
        query, key, value = (
            x.transpose(1, 2).contiguous().transpose(1, 2) for x in (query, key, value)
        )
    for x in (query, key, value):
        x.requires_grad_(grad_on)
    layer.zero_grad(set_to_none=True)
    layer.train(phase == "train")
    mode = None if phase in ("train", "no-grad") else phase.split("-")[1]
    torch.manual_seed(5)  # the training noise and dropout draws
    with torch.set_grad_enabled(grad_on):
        res = layer(
            query,
            key,
            value,
            query_lengths=Q_LEN,
            key_lengths=K_LEN,
            mode=mode,  # type: ignore[arg-type]
            need_weights=need_weights,
        )
    outs: dict[str, Tensor | None] = dict(res._asdict())
    grads: dict[str, Tensor | None] = {}
    if not grad_on:
        return outs, grads
    loss = (res.output * w_out).sum() + (res.alignment * w_align).sum()
    if res.p_choose is not None and res.p_choose.requires_grad:
        loss = loss + (res.p_choose * w_align).sum()
    if res.attn_weights is not None and res.attn_weights.requires_grad:
        loss = loss + (res.attn_weights * w_heads).sum()
    loss.backward()
    for name, p in layer.named_parameters():
        grads[name] = p.grad
    for name, x, valid in (("query", query, tok), ("key", key, frm), ("value", value, frm)):
        gx = x.grad
        assert gx is not None
        # padded positions never change an output: their gradient is exactly 0
        assert bool((gx.masked_select(~valid) == 0).all()), f"{fill}: {name} pad grad"
        grads[name] = torch.where(valid, gx, 0)
    return outs, grads


@pytest.mark.parametrize(
    ("head_selection", "tunable", "need_weights", "phase", "residual", "layer_norm", "impl"),
    _layer_cases(),
)
def test_layer_ignores_padding_content(
    head_selection: str,
    tunable: bool,
    need_weights: bool,
    phase: str,
    residual: bool,
    layer_norm: bool,
    impl: str,
) -> None:
    layer = _layer(
        initial_stay_prob=0.7,
        tunable=tunable,
        head_selection=head_selection,
        residual=residual,
        layer_norm=layer_norm,
        impl=impl,
    )
    _compare(lambda fill: _run_layer(layer, phase, need_weights, fill, 8, 8))


@pytest.mark.parametrize("head_selection", ["focus_rate", "per_head"])
@pytest.mark.parametrize("tunable", [True, False])
@pytest.mark.parametrize("phase", ["train", "no-grad"])
@pytest.mark.parametrize(
    ("kdim", "vdim", "bias"),
    [(12, 10, True), (16, 16, False), (12, 16, True)],
    ids=["vdim-not-head-multiple", "no-bias", "kdim"],
)
def test_layer_other_sizes_ignore_padding_content(
    head_selection: str, tunable: bool, phase: str, kdim: int, vdim: int, bias: bool
) -> None:
    """Other key/value sizes (values projected before the attention when ``vdim`` is not a
    multiple of the heads), no biases, and two projections instead of the chained one
    (``b * u < 2 * embed_dim``)."""
    layer = _layer(
        embed_dim=16,
        num_heads=4,
        kdim=kdim,
        vdim=vdim,
        tunable=tunable,
        head_selection=head_selection,
        bias=bias,
        layer_norm=True,
        residual=True,
    )
    _compare(lambda fill: _run_layer(layer, phase, True, fill, kdim, vdim))


_SWITCHES = (
    (nm, "FAST_KEY_ROWS"),
    (nm, "FAST_DROPOUT"),
    (nm, "FAST_KEY_GRAD"),
    (nm, "FAST_QUERY_GRAD"),
    (nm, "QUERY_ZEROED_ROWS"),
    (nm, "FAST_CHAINED_PROJ"),
    (fm, "FAST_VALID_BLOCKS"),
    (fm, "DENSE_CONTEXT_GRAD"),
    (fm, "FUSED_RANKING_BIAS"),
    (fm, "RANKING_WORKSPACE"),
    (fm, "REUSE_RANKING_ENERGIES"),
)


@pytest.mark.parametrize(("module", "switch"), _SWITCHES, ids=[n for _, n in _SWITCHES])
def test_layer_with_a_fast_path_switched_off_ignores_padding_content(
    module: object, switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The A/B switches of the focus-rate training step, each one flipped."""
    monkeypatch.setattr(module, switch, not getattr(module, switch))
    layer = _layer(layer_norm=True)
    _compare(lambda fill: _run_layer(layer, "train", False, fill, 8, 8))


@pytest.mark.parametrize(
    ("head_selection", "tunable"), [("focus_rate", True), ("per_head", True), ("per_head", False)]
)
def test_layer_key_is_value_ignores_padding_content(head_selection: str, tunable: bool) -> None:
    """One tensor passed as key and value (zeroed once where projected)."""
    layer = _layer(tunable=tunable, head_selection=head_selection, layer_norm=True)
    _compare(lambda fill: _run_layer(layer, "train", True, fill, 8, 8, kv_same=True))


@pytest.mark.parametrize(
    ("head_selection", "tunable", "phase"),
    [
        ("focus_rate", True, "train"),
        ("focus_rate", True, "eval-soft"),
        ("per_head", True, "train"),
        ("focus_rate", False, "train"),
    ],
)
def test_layer_strided_inputs_ignore_padding_content(
    head_selection: str, tunable: bool, phase: str
) -> None:
    """Non-contiguous inputs: the projections that skip padded rows item by item fall back to
    one product over zeroed rows (as on a GPU)."""
    layer = _layer(tunable=tunable, head_selection=head_selection, layer_norm=True)
    _compare(lambda fill: _run_layer(layer, phase, True, fill, 8, 8, strided=True))


@pytest.mark.parametrize("impl", IMPLS)
def test_layer_at_two_threads_ignores_padding_content(impl: str, two_threads: None) -> None:
    """Two intra-op threads: the parallel kernels and the dense context-gradient product."""
    layer = _layer(residual=True, layer_norm=True, impl=impl)
    _compare(lambda fill: _run_layer(layer, "train", True, fill, 8, 8))


def test_layer_stay_probability_ignores_padding_content() -> None:
    torch.manual_seed(0)
    layer = StepwiseMonotonicMultiheadAttention(embed_dim=8, num_heads=2, noise_std=0.5)

    def run(fill: str) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        g = torch.Generator().manual_seed(3)
        tok = lengths_to_valid_mask(Q_LEN, U)[..., None]
        frm = lengths_to_valid_mask(K_LEN, T)[..., None]
        query = _fill(torch.randn(B, U, 8, generator=g), tok, fill, 11).requires_grad_(True)
        key = _fill(torch.randn(B, T, 8, generator=g), frm, fill, 12).requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        p = layer.stay_probability(query, key, query_lengths=Q_LEN, key_lengths=K_LEN)
        (p * torch.randn(p.shape, generator=g)).sum().backward()
        grads: dict[str, Tensor | None] = {n: w.grad for n, w in layer.named_parameters()}
        assert query.grad is not None and key.grad is not None
        grads["query"] = torch.where(tok, query.grad, 0)
        grads["key"] = torch.where(frm, key.grad, 0)
        return {"p": p}, grads

    _compare(run)


# ------------------------------------------------------------------------ the functional


def _functional_cases() -> list[tuple[str, bool, str, bool, float, bool, str]]:
    cases = []
    for sel, tunable in (("focus_rate", True), ("per_head", True), ("focus_rate", False)):
        for mode in ("soft", "hard", "viterbi") if tunable else ("soft",):
            for need in (True, False):
                for noise in (0.0, 0.5) if tunable else (0.0,):
                    for grad_on in (True, False):
                        for impl in IMPLS:
                            cases.append((sel, tunable, mode, need, noise, grad_on, impl))
    return cases


@pytest.mark.parametrize(
    ("head_selection", "tunable", "mode", "need_weights", "noise_std", "grad_on", "impl"),
    _functional_cases(),
)
def test_functional_ignores_padding_content(
    head_selection: str,
    tunable: bool,
    mode: str,
    need_weights: bool,
    noise_std: float,
    grad_on: bool,
    impl: str,
) -> None:
    h, dk, dv = 2, 4, 3

    def run(fill: str) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        g = torch.Generator().manual_seed(3)
        tok = lengths_to_valid_mask(Q_LEN, U)[:, None, :, None]
        frm = lengths_to_valid_mask(K_LEN, T)[:, None, :, None]
        query = _fill(torch.randn(B, h, U, dk, generator=g), tok, fill, 11)
        key = _fill(torch.randn(B, h, T, dk, generator=g), frm, fill, 12)
        value = _fill(torch.randn(B, h, T, dv, generator=g), frm, fill, 13)
        bias = torch.tensor([1.0, 0.5])
        leaves = {"query": query, "key": key, "value": value}
        if tunable:  # the softmax path has no stay bias
            leaves["stay_bias"] = bias
        for x in leaves.values():
            x.requires_grad_(grad_on)
        with torch.set_grad_enabled(grad_on):
            res = stepwise_monotonic_attention(
                query,
                key,
                value,
                query_lengths=Q_LEN,
                key_lengths=K_LEN,
                stay_bias=bias,
                noise_std=noise_std,
                tunable=tunable,
                mode=mode,  # type: ignore[arg-type]
                head_selection=head_selection,  # type: ignore[arg-type]
                generator=torch.Generator().manual_seed(9),
                impl=impl,
                need_weights=need_weights,
            )
        outs: dict[str, Tensor | None] = dict(res._asdict())
        grads: dict[str, Tensor | None] = {}
        if not grad_on:
            return outs, grads
        loss = (res.context * torch.randn(res.context.shape, generator=g)).sum()
        w_align = torch.randn(B, U, T, generator=g)
        if res.alignment.requires_grad:
            loss = loss + (res.alignment * w_align).sum()
        if res.p_choose is not None and res.p_choose.requires_grad:
            loss = loss + (res.p_choose * w_align).sum()
        if res.attn_weights is not None and res.attn_weights.requires_grad:
            loss = loss + (res.attn_weights * torch.randn(B, h, U, T, generator=g)).sum()
        loss.backward()
        for name, x in leaves.items():
            gx = x.grad
            assert gx is not None, name
            if name == "stay_bias":
                grads[name] = gx
                continue
            valid = tok if name == "query" else frm
            assert bool((gx.masked_select(~valid) == 0).all()), f"{fill}: {name}"
            grads[name] = torch.where(valid, gx, 0)
        return outs, grads

    _compare(run)


@pytest.mark.parametrize("head_selection", ["focus_rate", "per_head"])
@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("impl", IMPLS)
def test_functional_initial_alignment_padding_content(
    head_selection: str, mode: str, impl: str
) -> None:
    """The padded tokens of ``initial_alignment`` (and of query, key, value) are never read."""

    def run(fill: str) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        g = torch.Generator().manual_seed(3)
        tok = lengths_to_valid_mask(Q_LEN, U)
        frm = lengths_to_valid_mask(K_LEN, T)[:, None, :, None]
        query = _fill(torch.randn(B, 2, U, 4, generator=g), tok[:, None, :, None], fill, 11)
        key = _fill(torch.randn(B, 2, T, 4, generator=g), frm, fill, 12)
        value = _fill(torch.randn(B, 2, T, 3, generator=g), frm, fill, 13)
        a0 = _fill(torch.softmax(torch.randn(B, U, generator=g), -1), tok, fill, 14)
        value.requires_grad_(True)
        res = stepwise_monotonic_attention(
            query,
            key,
            value,
            query_lengths=Q_LEN,
            key_lengths=K_LEN,
            stay_bias=1.0,
            mode=mode,  # type: ignore[arg-type]
            head_selection=head_selection,  # type: ignore[arg-type]
            initial_alignment=a0,
            impl=impl,
        )
        (res.context * torch.randn(res.context.shape, generator=g)).sum().backward()
        assert value.grad is not None
        return dict(res._asdict()), {"value": torch.where(frm, value.grad, 0)}

    _compare(run)


@pytest.mark.parametrize("noise_std", [0.0, 0.5])
def test_functional_stay_probability_ignores_padding_content(noise_std: float) -> None:
    def run(fill: str) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        g = torch.Generator().manual_seed(3)
        tok = lengths_to_valid_mask(Q_LEN, U)[:, None, :, None]
        frm = lengths_to_valid_mask(K_LEN, T)[:, None, :, None]
        query = _fill(torch.randn(B, 2, U, 4, generator=g), tok, fill, 11).requires_grad_(True)
        key = _fill(torch.randn(B, 2, T, 4, generator=g), frm, fill, 12).requires_grad_(True)
        bias = torch.tensor([1.0, 0.5], requires_grad=True)
        p = stepwise_stay_probability(
            query,
            key,
            query_lengths=Q_LEN,
            key_lengths=K_LEN,
            stay_bias=bias,
            noise_std=noise_std,
            generator=torch.Generator().manual_seed(9),
        )
        (p * torch.randn(p.shape, generator=g)).sum().backward()
        assert query.grad is not None and key.grad is not None and bias.grad is not None
        grads: dict[str, Tensor | None] = {"stay_bias": bias.grad}
        grads["query"] = torch.where(tok, query.grad, 0)
        grads["key"] = torch.where(frm, key.grad, 0)
        return {"p": p}, grads

    _compare(run)


# ------------------------------------------------- the MHA-style layers that take lengths

_MQ_LEN, _MK_LEN = torch.tensor([7, 5, 3]), torch.tensor([9, 6, 0])  # a key-less item too


def _run_module(
    module: torch.nn.Module,
    call: Callable[[Tensor, Tensor, Tensor], Tensor],
    fill: str,
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    lengths: tuple[Tensor, Tensor],
) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
    """``call(x, memory, value) -> output`` in training (seeded dropout) with the padded rows of
    the three inputs filled; outputs, parameter gradients and valid-row input gradients."""
    g = torch.Generator().manual_seed(3)
    (xs, ms), (lx, lm) = shapes, lengths
    x_valid = lengths_to_valid_mask(lx, xs[1])[..., None]
    m_valid = lengths_to_valid_mask(lm, ms[1])[..., None]
    x = _fill(torch.randn(xs, generator=g), x_valid, fill, 11).requires_grad_(True)
    mem = _fill(torch.randn(ms, generator=g), m_valid, fill, 12).requires_grad_(True)
    val = _fill(torch.randn(ms, generator=g), m_valid, fill, 13).requires_grad_(True)
    module.zero_grad(set_to_none=True)
    module.train()
    torch.manual_seed(5)
    out = call(x, mem, val)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    grads: dict[str, Tensor | None] = {n: p.grad for n, p in module.named_parameters()}
    for name, inp, valid in (("x", x, x_valid), ("memory", mem, m_valid), ("value", val, m_valid)):
        gi = inp.grad
        if gi is None:  # an input the call does not use
            continue
        assert bool((gi.masked_select(~valid) == 0).all()), f"{fill}: {name} pad grad"
        grads[name] = torch.where(valid, gi, 0)
    return {"output": out}, grads


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("prior", [None, "diagonal"])
@pytest.mark.parametrize("form", ["cross", "cross-kv-same", "self", "self-causal"])
def test_prior_attention_ignores_padding_content(
    need_weights: bool, prior: str | None, form: str
) -> None:
    from speechattn.functional.priors import DiagonalPrior
    from speechattn.nn.attention import PriorMultiheadAttention

    torch.manual_seed(0)
    mha = PriorMultiheadAttention(
        embed_dim=8,
        num_heads=2,
        dropout=0.2,
        prior=None if prior is None else DiagonalPrior(kind="gaussian", sigma=0.3),
    )

    def call(x: Tensor, mem: Tensor, val: Tensor) -> Tensor:
        if form.startswith("self"):
            kw = {"query_lengths": _MQ_LEN, "causal": form == "self-causal"}
            res = mha(x, need_weights=need_weights, **kw)  # type: ignore[arg-type]
        else:
            res = mha(
                x,
                mem,
                mem if form == "cross-kv-same" else val,
                query_lengths=_MQ_LEN,
                key_lengths=_MK_LEN,
                need_weights=need_weights,
            )
        assert res.attn_weights is None or torch.isfinite(res.attn_weights).all()
        return res.output

    _compare(lambda fill: _run_module(mha, call, fill, ((3, 7, 8), (3, 9, 8)), (_MQ_LEN, _MK_LEN)))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("layer", ["encoder", "decoder"])
def test_speech_transformer_layers_ignore_padding_content(layer: str, norm_first: bool) -> None:
    from speechattn.functional.priors import DiagonalPrior
    from speechattn.nn.speech_transformer import (
        SpeechTransformerDecoderLayer,
        SpeechTransformerEncoderLayer,
    )

    torch.manual_seed(0)
    kw = {"embed_dim": 8, "num_heads": 2, "ffn_dim": 16, "dropout": 0.2, "norm_first": norm_first}
    prior = DiagonalPrior(kind="gaussian", sigma=0.3)
    if layer == "encoder":
        enc = SpeechTransformerEncoderLayer(prior=prior, **kw)  # type: ignore[arg-type]
        _compare(
            lambda fill: _run_module(
                enc,
                lambda x, m, v: enc(x, _MK_LEN.clamp_min(1), need_weights=True).output,
                fill,
                ((3, 9, 8), (3, 9, 8)),
                (_MK_LEN.clamp_min(1), _MK_LEN.clamp_min(1)),
            )
        )
    else:
        dec = SpeechTransformerDecoderLayer(prior=prior, **kw)  # type: ignore[arg-type]
        _compare(
            lambda fill: _run_module(
                dec,
                lambda x, m, v: (
                    dec(x, m, x_lengths=_MQ_LEN, memory_lengths=_MK_LEN, need_weights=True).output
                ),
                fill,
                ((3, 7, 8), (3, 9, 8)),
                (_MQ_LEN, _MK_LEN),
            )
        )
