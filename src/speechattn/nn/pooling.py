"""Temporal pooling layers (the WeSpeaker family), with lengths.

Every class has WeSpeaker's name, constructor arguments and defaults, parameter names and
Conv1d-shaped weights, so ``layer.load_state_dict(wespeaker_layer.state_dict(), strict=True)``
works, and the same output ordering. Differences, all additive:

* ``forward(x, lengths=None)``: with int64 ``lengths (B,)`` (``1 <= lengths[b] <= T``) softmax and
  statistics use valid frames only; padded frames are zeroed first, so padding content never
  changes an output and a padded item pools exactly as the same item trimmed.
* never NaN: one valid frame gives ``std = sqrt(eps)`` (WeSpeaker's TSDP/TSTP return NaN there).
* statistics in float32 (float64 for float64 input), also under autocast; outputs are at least
  float32.
* heads and queries are batched (attention MLP, softmax and statistics fused in one autograd
  function, tiled over the batch, recomputing backward), not a Python loop per head.

Input ``x`` is ``(B, F, T)`` as TDNNs give it, or ``(B, C, F, T)`` as ResNets give it (flattened to
``(B, C*F, T)``), time last. Constructor arguments may be given by position in WeSpeaker's order
(``MQMHASTP(640, 2, 2, 8)`` is ``layer_num=2, query_num=2, head_num=8``) or by keyword; the extra
keywords WeSpeaker's ``**kwargs`` swallow in its own examples (``global_context_att`` for every
layer, ``context``) are accepted and ignored where they have no meaning. :data:`POOLINGS` lists
the layer names in WeSpeaker's file order.

Example::

    >>> import torch
    >>> from speechattn.nn import MQMHASTP
    >>> pool = MQMHASTP(256, head_num=4)
    >>> x = torch.randn(3, 32, 8, 50)            # (B, C, F, T) from a ResNet
    >>> emb = pool(x, torch.tensor([50, 31, 7]))  # (B, 2 * 2 * 256)
    >>> emb.shape, pool.get_out_dim()
    (torch.Size([3, 1024]), 1024)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import cast

import torch
from torch import Tensor, nn

from speechattn.functional.pooling import (
    _fp32_region,
    attentive_statistics_pooling,
    head_attentive_statistics,
    masked_batch_norm,
    multi_head_attentive_statistics_pooling,
    prepare_pooling_input,
    temporal_mean_std,
)

__all__ = [
    "ASP",
    "ASTP",
    "MHASTP",
    "MQMHASTP",
    "POOLINGS",
    "TAP",
    "TSDP",
    "TSTP",
    "export_pooling_onnx",
]

#: Names of the pooling layers, in WeSpeaker's order (each is a class of this module).
POOLINGS: tuple[str, ...] = ("TAP", "TSDP", "TSTP", "ASTP", "MHASTP", "MQMHASTP", "ASP")


def _check_in_dim(name: str, value: int, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected {name} to be an int; found {type(value).__name__}.")
    if value < (0 if allow_zero else 1):
        raise ValueError(f"Expected {name} >= {0 if allow_zero else 1}; found {value}.")
    return value


def _check_features(layer: str, x: Tensor, in_dim: int) -> None:
    feat = x.shape[1]
    if in_dim and feat != in_dim:
        raise ValueError(
            f"{layer}: expected x with F = in_dim = {in_dim} features (B, F, T) or C*F = {in_dim} "
            f"for (B, C, F, T); found {feat} from shape {tuple(x.shape)}."
        )


class TAP(nn.Module):
    """Temporal average pooling: the mean over valid frames. ``(B, F, T) -> (B, F)``.

    Args:
        in_dim: feature size F (only used by :meth:`get_out_dim`; 0 as in WeSpeaker).
        global_context_att: accepted and ignored, as WeSpeaker does, so ECAPA configs that pass it
            to any pooling keep working.
    """

    def __init__(self, in_dim: int = 0, *, global_context_att: bool = False) -> None:
        super().__init__()
        self.in_dim = _check_in_dim("in_dim", in_dim, allow_zero=True)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, lengths, _ = prepare_pooling_input(x, lengths)
        _check_features("TAP", x, self.in_dim)
        with _fp32_region(x):
            xf = x.to(torch.promote_types(x.dtype, torch.float32))
            if lengths is None:
                return xf.mean(-1)
            return xf.sum(-1) / lengths.to(xf.dtype).unsqueeze(-1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim
        return self.out_dim

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}"


class TSDP(nn.Module):
    """Temporal standard-deviation pooling: ``sqrt(var + 1e-7)`` over valid frames.

    The variance is unbiased with denominator ``max(n - 1, 1)``, so one valid frame gives
    ``sqrt(1e-7)`` instead of NaN (see :func:`~speechattn.functional.pooling.temporal_mean_std`).
    ``(B, F, T) -> (B, F)``. Args as :class:`TAP`.
    """

    def __init__(self, in_dim: int = 0, *, global_context_att: bool = False) -> None:
        super().__init__()
        self.in_dim = _check_in_dim("in_dim", in_dim, allow_zero=True)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, lengths, mask = prepare_pooling_input(x, lengths)
        _check_features("TSDP", x, self.in_dim)
        return temporal_mean_std(x, lengths, eps=1e-7, valid_mask=mask)[1]

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim
        return self.out_dim

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}"


class TSTP(nn.Module):
    """Temporal statistics pooling (x-vector): ``[mean, std]`` over valid frames, ``(B, 2F)``.

    Std as :class:`TSDP`. Args as :class:`TAP`.
    """

    def __init__(self, in_dim: int = 0, *, global_context_att: bool = False) -> None:
        super().__init__()
        self.in_dim = _check_in_dim("in_dim", in_dim, allow_zero=True)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x, lengths, mask = prepare_pooling_input(x, lengths)
        _check_features("TSTP", x, self.in_dim)
        mean, std = temporal_mean_std(x, lengths, eps=1e-7, valid_mask=mask)
        return torch.cat([mean, std], dim=1)

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim * 2
        return self.out_dim

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}"


class ASTP(nn.Module):
    """Attentive statistics pooling with channel-wise attention (ECAPA-TDNN).

    ``a = softmax_t(linear2(tanh(linear1(x_in))))`` per channel and frame, ``x_in = x`` or, with
    ``global_context_att``, ``[x, mean, std]`` (utterance statistics over valid frames). Output
    ``[sum_t a x, sqrt(clamp(sum_t a x^2 - mean^2, 1e-7))]``, ``(B, 2F)``.

    Args:
        in_dim: feature size F (C*F for 4-D input).
        bottleneck_dim: attention hidden size.
        global_context_att: append utterance mean/std to the attention input (ECAPA "GLOB").

    Parameters: ``linear1`` Conv1d(F or 3F -> bottleneck, 1), ``linear2`` Conv1d(bottleneck -> F, 1).
    """

    def __init__(
        self, in_dim: int, bottleneck_dim: int = 128, global_context_att: bool = False
    ) -> None:
        super().__init__()
        self.in_dim = _check_in_dim("in_dim", in_dim)
        _check_in_dim("bottleneck_dim", bottleneck_dim)
        self.global_context_att = bool(global_context_att)
        self.linear1 = nn.Conv1d(
            in_dim * 3 if global_context_att else in_dim, bottleneck_dim, kernel_size=1
        )
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        _check_mh_features("ASTP", x, self.in_dim)
        return attentive_statistics_pooling(
            x,
            lengths,
            linear1_weight=self.linear1.weight,
            linear1_bias=self.linear1.bias,
            linear2_weight=self.linear2.weight,
            linear2_bias=self.linear2.bias,
            global_context_att=self.global_context_att,
            eps=1e-7,
        )

    def get_out_dim(self) -> int:
        self.out_dim = 2 * self.in_dim
        return self.out_dim

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, global_context_att={self.global_context_att}"


class ASP(nn.Module):
    """Attentive statistics pooling as in the w2v-BERT / ResNet speaker recipes.

    ``attention = Conv1d(D, 128) -> ReLU -> BatchNorm1d(128) -> Conv1d(128, D) -> Softmax(time)``
    with ``D = in_planes * 8 * (acoustic_dim // 8)``; output ``[mu, sqrt(clamp(m2 - mu^2, 1e-5))]``,
    ``(B, 2D)``. With lengths, the BatchNorm's training-mode batch statistics use valid frames only
    (eval mode uses the running statistics, frame by frame, as usual).

    Args:
        in_planes: ResNet base width (the input has ``in_planes * 8`` channels).
        acoustic_dim: input feature size; the ResNet downsamples it by 8.
    """

    def __init__(self, in_planes: int, acoustic_dim: int) -> None:
        super().__init__()
        _check_in_dim("in_planes", in_planes)
        _check_in_dim("acoustic_dim", acoustic_dim)
        outmap_size = int(acoustic_dim / 8)
        dim = in_planes * 8 * outmap_size
        if dim < 1:
            raise ValueError(
                f"Expected acoustic_dim >= 8 (downsampled by 8); found {acoustic_dim}."
            )
        self.in_dim = dim
        self.out_dim = dim * 2
        self.attention = nn.Sequential(
            nn.Conv1d(dim, 128, kernel_size=1),
            nn.ReLU(),
            nn.BatchNorm1d(128),
            nn.Conv1d(128, dim, kernel_size=1),
            nn.Softmax(dim=2),
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if isinstance(x, Tensor) and x.dim() >= 3:  # (B, C, F, T) or deeper: channels flattened
            x = x.reshape(x.shape[0], math.prod(x.shape[1:-1]), x.shape[-1])
        x, lengths, mask = prepare_pooling_input(x, lengths)
        _check_features("ASP", x, self.in_dim)
        conv1, _, bn_, conv2, _ = self.attention
        bn = cast(nn.BatchNorm1d, bn_)
        h = torch.relu(conv1(x))
        h = masked_batch_norm(
            h,
            mask,
            running_mean=bn.running_mean,
            running_var=bn.running_var,
            num_batches_tracked=bn.num_batches_tracked,
            weight=bn.weight,
            bias=bn.bias,
            training=bn.training,
            momentum=bn.momentum,
            eps=bn.eps,
        )
        conv2 = cast(nn.Conv1d, conv2)
        with _fp32_region(x):
            xf = x.to(torch.promote_types(x.dtype, torch.float32))
            weight = conv2.weight.squeeze(-1).view(1, 1, self.in_dim, -1)
            bias = None if conv2.bias is None else conv2.bias.view(1, 1, self.in_dim)
            mu, sg = head_attentive_statistics(h, weight, bias, xf, mask, eps=1e-5)
        return torch.cat([mu.view(-1, self.in_dim), sg.view(-1, self.in_dim)], dim=1)

    def get_out_dim(self) -> int:
        return self.out_dim

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}"


class MHASTP(nn.Module):
    """Multi-head attentive statistics pooling (India et al., 2019; WeSpeaker's MHASTP).

    The F channels split into ``head_num`` heads of ``c = F / head_num``; each head has its own
    ``layer_num``-layer 1x1-conv attention MLP (tanh between layers, bottleneck ``bottleneck_dim``)
    giving ``d_s`` logits per frame: ``d_s = 1`` one weight per frame, any ``d_s > 1`` means
    ``d_s = c`` (a weight per channel). Output per head ``[mean (c), std (c)]``, ``(B, 2F)``.

    Args:
        in_dim: feature size F (C*F for 4-D input), divisible by head_num.
        layer_num: attention MLP depth n >= 1.
        head_num: number of heads.
        d_s: 1, or > 1 for channel-wise attention (becomes c).
        bottleneck_dim: hidden size of the attention MLP.
        global_context_att: accepted and ignored (as WeSpeaker's ``**kwargs``).
        context: accepted and ignored (WeSpeaker's own example passes ``context=False``).

    Parameters: ``heads_att_trans.{h}.att_{i}.weight/bias`` Conv1d-shaped, as WeSpeaker.
    """

    def __init__(
        self,
        in_dim: int,
        layer_num: int = 2,
        head_num: int = 2,
        d_s: int = 1,
        bottleneck_dim: int = 64,
        *,
        global_context_att: bool = False,
        context: bool | None = None,
    ) -> None:
        super().__init__()
        _check_in_dim("in_dim", in_dim)
        _check_in_dim("layer_num", layer_num)
        _check_in_dim("head_num", head_num)
        _check_in_dim("d_s", d_s)
        _check_in_dim("bottleneck_dim", bottleneck_dim)
        if in_dim % head_num != 0:
            raise ValueError(
                f"Expected in_dim divisible by head_num; found in_dim={in_dim}, head_num={head_num}. "
                "Pick a head_num that divides the feature size."
            )
        self.in_dim = in_dim
        self.head_num = head_num
        self.layer_num = layer_num
        d_model = in_dim // head_num
        self.d_s = d_model if d_s > 1 else 1
        dims = [bottleneck_dim] * (layer_num + 1)
        dims[0], dims[-1] = d_model, self.d_s
        heads = []
        for _ in range(head_num):
            seq = nn.Sequential()
            for i in range(layer_num - 1):
                seq.add_module(f"att_{i}", nn.Conv1d(dims[i], dims[i + 1], 1, 1))
                seq.add_module(f"tanh{i}", nn.Tanh())
            seq.add_module(
                f"att_{layer_num - 1}", nn.Conv1d(dims[layer_num - 1], dims[layer_num], 1, 1)
            )
            heads.append(seq)
        self.heads_att_trans = nn.ModuleList(heads)

    def _conv(self, head: int, layer: int) -> nn.Conv1d:
        return cast(nn.Conv1d, self.heads_att_trans[head]._modules[f"att_{layer}"])

    def stacked_parameters(self) -> tuple[list[Tensor], list[Tensor | None]]:
        """Per layer, weights ``(head_num, 1, out, in)`` and biases ``(head_num, 1, out)``."""
        ws: list[Tensor] = []
        bs: list[Tensor | None] = []
        for i in range(self.layer_num):
            convs = [self._conv(h, i) for h in range(self.head_num)]
            ws.append(torch.stack([c.weight.squeeze(-1) for c in convs]).unsqueeze(1))
            b = [c.bias for c in convs if c.bias is not None]
            bs.append(torch.stack(b).unsqueeze(1) if len(b) == len(convs) else None)
        return ws, bs

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        ws, bs = self.stacked_parameters()
        _check_mh_features("MHASTP", x, self.in_dim)
        return multi_head_attentive_statistics_pooling(
            x, lengths, weights=ws, biases=bs, head_num=self.head_num, query_num=1, eps=1e-7
        )

    def get_out_dim(self) -> int:
        self.out_dim = 2 * self.in_dim
        return self.out_dim

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, layer_num={self.layer_num}, head_num={self.head_num}, "
            f"d_s={self.d_s}"
        )


def _check_mh_features(layer: str, x: Tensor, in_dim: int) -> None:
    if isinstance(x, Tensor) and x.dim() in (3, 4):
        feat = x.shape[1] if x.dim() == 3 else x.shape[1] * x.shape[2]
        if feat != in_dim:
            raise ValueError(
                f"{layer}: expected x with F = in_dim = {in_dim} features (B, F, T) or C*F = {in_dim} "
                f"for (B, C, F, T); found {feat} from shape {tuple(x.shape)}."
            )


class MQMHASTP(nn.Module):
    """Multi-query multi-head attentive statistics pooling (Zhao et al., ICASSP 2022).

    ``query_num`` independent :class:`MHASTP` poolings (``n_query.{q}``) of the same input; all
    queries and heads are batched in one fused pass. Output ordered query, then head, then
    ``[mean, std]``: ``(B, 2 * query_num * F)``.

    Args:
        in_dim: feature size F (C*F for 4-D input), divisible by head_num.
        layer_num: attention MLP depth n >= 1.
        query_num: number of queries.
        head_num: number of heads.
        d_s: 1, or > 1 for channel-wise attention (becomes c = F / head_num).
        bottleneck_dim: hidden size of the attention MLP.
        global_context_att: accepted and ignored (as WeSpeaker's ``**kwargs``).
        context: accepted and ignored (WeSpeaker's own example passes ``context=False``).

    Parameters: ``n_query.{q}.heads_att_trans.{h}.att_{i}.weight/bias``, as WeSpeaker.
    """

    def __init__(
        self,
        in_dim: int,
        layer_num: int = 2,
        query_num: int = 2,
        head_num: int = 8,
        d_s: int = 2,
        bottleneck_dim: int = 64,
        *,
        global_context_att: bool = False,
        context: bool | None = None,
    ) -> None:
        super().__init__()
        _check_in_dim("query_num", query_num)
        self.n_query = nn.ModuleList(
            [
                MHASTP(
                    in_dim,
                    layer_num=layer_num,
                    head_num=head_num,
                    d_s=d_s,
                    bottleneck_dim=bottleneck_dim,
                )
                for _ in range(query_num)
            ]
        )
        self.query_num = query_num
        self.in_dim = in_dim
        self.head_num = head_num
        self.layer_num = layer_num

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        per_query = [q.stacked_parameters() for q in self.n_query]  # type: ignore[operator]
        ws = [torch.cat([p[0][i] for p in per_query], dim=1) for i in range(self.layer_num)]
        bs: list[Tensor | None] = []
        for i in range(self.layer_num):
            b = [v for p in per_query if (v := p[1][i]) is not None]
            bs.append(torch.cat(b, dim=1) if len(b) == len(per_query) else None)
        _check_mh_features("MQMHASTP", x, self.in_dim)
        return multi_head_attentive_statistics_pooling(
            x,
            lengths,
            weights=ws,
            biases=bs,
            head_num=self.head_num,
            query_num=self.query_num,
            eps=1e-7,
        )

    def get_out_dim(self) -> int:
        self.out_dim = self.in_dim * 2 * self.query_num
        return self.out_dim

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, layer_num={self.layer_num}, query_num={self.query_num}, "
            f"head_num={self.head_num}"
        )


def export_pooling_onnx(
    layer: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_frames: int = 16,
    channels: int | None = None,
    opset_version: int | None = None,
) -> Path:
    """Export a pooling layer to ONNX with dynamic batch, frames and lengths.

    The graph takes ``x`` float32 ``(B, F, T)`` (or ``(B, C, F', T)`` when ``channels`` is given,
    ``F = C * F'``) and ``lengths`` int64 ``(B,)`` and returns ``emb`` ``(B, get_out_dim())``.
    Length validation is a host-side check and is skipped inside the graph: callers must pass
    ``1 <= lengths[b] <= T``. Needs the ``onnx`` extra (onnx, onnxscript); uses the
    ``torch.export``-based exporter.

    Args:
        layer: one of this module's pooling layers (eval mode is used for the export).
        path: where to write the ``.onnx`` file.
        example_frames: T of the example input used for tracing (any T works afterwards).
        channels: export the 4-D ``(B, C, F', T)`` input form with this C.
        opset_version: ONNX opset (exporter default when None).

    Returns:
        The written path.
    """
    in_dim = int(getattr(layer, "in_dim", 0))
    if in_dim < 1:
        raise ValueError(
            f"Expected a pooling layer with in_dim >= 1 to build the example input; found in_dim={in_dim}. "
            "Construct TAP/TSDP/TSTP with in_dim=F."
        )
    if example_frames < 2:
        raise ValueError(f"Expected example_frames >= 2; found {example_frames}.")
    if channels is not None and (channels < 1 or in_dim % channels != 0):
        raise ValueError(f"Expected channels dividing in_dim={in_dim}; found {channels}.")
    was_training = layer.training
    layer.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    frames = torch.export.Dim("frames", min=2, max=2**20)
    shape = (
        (2, in_dim, example_frames)
        if channels is None
        else (2, channels, in_dim // channels, example_frames)
    )
    x = torch.randn(*shape)
    lengths = torch.tensor([example_frames, max(1, example_frames // 2)])
    time_axis = len(shape) - 1
    try:
        program = torch.onnx.export(
            layer,
            (x, lengths),
            input_names=["x", "lengths"],
            output_names=["emb"],
            dynamic_shapes={"x": {0: batch, time_axis: frames}, "lengths": {0: batch}},
            opset_version=opset_version,
            dynamo=True,
            verbose=False,
        )
    finally:
        layer.train(was_training)
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise RuntimeError("torch.onnx.export returned no program.")
    out = Path(path)
    program.save(str(out))
    return out
