"""Contrastive losses between audio and text-encoder embeddings (sequence-level and pooled).

Shape legend: ``b`` batch, ``l`` positions (the text encoder's sequence length, e.g. 77 for CLIP),
``d`` embedding width, ``w`` distributed world size.

The sequence-level loss is the one of the Wav2Vec2-BERT -> CLIP fine-tuning recipe (audio -> CLIP text states for Stable Diffusion):
position ``l`` of audio item ``i`` is scored against position ``l`` of every text item ``j`` by
cosine similarity over ``temperature``, and a cross-entropy over ``j`` picks the matching item. The
original recipe computed it by broadcasting to a ``B x B x L x D`` tensor; here both sides are normalised once and
one batched contraction gives the ``L x B x B`` logits, so memory is ``O(B^2 L + B L D)``.

The pooled variant is the CLIP / CLAP InfoNCE loss (Radford et al. 2021, "Learning Transferable
Visual Models From Natural Language Supervision"; Elizalde et al. 2023, "CLAP") on masked means.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = ["pooled_contrastive_loss", "sequence_contrastive_loss"]

Direction = Literal["audio_to_text", "text_to_audio", "both"]
Reduction = Literal["mean", "sum", "none"]
_DIRECTIONS = ("audio_to_text", "text_to_audio", "both")
_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------------------------------
# validation helpers


def _check_float3(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected {name} to be a float tensor (B, L, D); found {type(x).__name__}."
        )
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"Expected {name} to be a floating point tensor; found dtype {x.dtype}. Cast it with .float()."
        )
    if x.dim() != 3:
        raise ValueError(
            f"Expected {name} of shape (B, L, D); found {tuple(x.shape)}. "
            "Add a length axis with .unsqueeze(1) for one vector per item, or use pooled_contrastive_loss."
        )
    return x


def _check_temperature(temperature: float | Tensor, device: torch.device) -> None:
    """A Python number must be finite and > 0. A tensor must hold one real (integer or
    floating) value, live on ``device`` (the inputs' device) unless it is a 0-d CPU tensor, and
    is range-checked only where reading it costs no device sync and no graph break: on the CPU
    and outside ``torch.compile`` tracing. A tensor on an accelerator is not read (that would
    wait for the device at every step); a learnable temperature must be kept positive by its
    parametrisation, e.g. ``exp(log_temperature)`` as :class:`speechattn.nn.SequenceContrastiveLoss`
    does."""
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"Expected temperature to be a scalar; found a tensor of shape {tuple(temperature.shape)}."
            )
        if temperature.dtype == torch.bool or temperature.is_complex():
            raise TypeError(
                f"Expected a real (integer or floating) temperature tensor; found {temperature.dtype}."
            )
        if temperature.device != device and not (
            temperature.device.type == "cpu" and temperature.dim() == 0
        ):
            raise ValueError(
                f"Expected temperature on the inputs' device {device} (or a 0-d CPU tensor); "
                f"found a tensor of shape {tuple(temperature.shape)} on {temperature.device}."
            )
        if temperature.device.type == "cpu" and not torch.compiler.is_compiling():
            value = temperature.detach().reshape(())
            if not bool((value > 0) & value.isfinite()):  # NaN fails too
                raise ValueError(
                    f"Expected a finite temperature > 0; found a tensor holding {value.item():.6g}. "
                    "Keep a learnable temperature positive by learning its log: "
                    "temperature = log_temperature.exp() (as nn.SequenceContrastiveLoss does)."
                )
        return
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(
            f"Expected temperature to be a float or a scalar tensor; found {temperature!r}."
        )
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"Expected a finite temperature > 0; found {temperature}.")


def _resolve_valid(
    lengths: Tensor | None,
    valid_mask: Tensor | None,
    name: str,
    *,
    batch: int,
    length: int,
    device: torch.device,
) -> Tensor | None:
    """A ``(B, L)`` bool keep-mask from ``<name>_lengths`` or ``<name>_valid_mask`` (None = all valid)."""
    if lengths is not None and valid_mask is not None:
        raise ValueError(f"Pass {name}_lengths or {name}_valid_mask, not both.")
    if lengths is not None:
        lengths = check_lengths(
            lengths, f"{name}_lengths", batch=batch, max_len=length, device=device
        )
        return lengths_to_valid_mask(lengths, length)
    if valid_mask is not None:
        if not isinstance(valid_mask, Tensor) or valid_mask.dtype != torch.bool:
            raise TypeError(
                f"Expected {name}_valid_mask to be a bool tensor (True = keep); found "
                f"{getattr(valid_mask, 'dtype', type(valid_mask).__name__)}."
            )
        if valid_mask.shape != (batch, length):
            raise ValueError(
                f"Expected {name}_valid_mask of shape ({batch}, {length}); found {tuple(valid_mask.shape)}."
            )
        return valid_mask.to(device)
    return None


# ---------------------------------------------------------------------------------------------
# distributed gathering


def _dist_state(gather_distributed: bool) -> tuple[int, int]:
    """(rank, world_size); (0, 1) when not gathering."""
    if not gather_distributed:
        return 0, 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "gather_distributed=True needs an initialised torch.distributed process group "
            "(torchrun + torch.distributed.init_process_group); found none. Pass gather_distributed=False."
        )
    return dist.get_rank(), dist.get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate a tensor over ranks along dim 0; backward sums the incoming gradient over ranks.

    Every rank's loss depends on every rank's slice, so the gradient of the summed loss for this
    rank's slice is the all-reduced gradient of the gathered tensor, sliced back.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank = dist.get_rank()
        ctx.size = x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        # The incoming gradient can be a non-contiguous view (e.g. from an einsum/transposed
        # matmul backward); gloo then reduces the wrong elements (pytorch issue 192920). A fresh
        # contiguous copy also keeps the in-place all_reduce off autograd's own buffer.
        grad = grad.contiguous().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.size
        return grad[start : start + ctx.size]


def _gather_no_grad(x: Tensor, rank: int, world: int) -> Tensor:
    """All-gather along dim 0 without gradients, except through this rank's own slice."""
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world)]
    with torch.no_grad():
        dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, 0)


def _gather_mask(mask: Tensor, world: int) -> Tensor:
    """All-gather a bool mask along dim 0 (sent as uint8: not every backend takes bool)."""
    import torch.distributed as dist

    m = mask.to(torch.uint8).contiguous()
    parts = [torch.empty_like(m) for _ in range(world)]
    dist.all_gather(parts, m)
    return torch.cat(parts, 0).bool()


def _all_reduce_sum(x: Tensor) -> Tensor:
    import torch.distributed as dist

    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


# ---------------------------------------------------------------------------------------------
# core


def _normalize(x: Tensor, eps: float) -> Tensor:
    # Same as torch.cosine_similarity: x / max(||x||, eps) along the feature axis.
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def _direction_nll(logits: Tensor, cand_valid: Tensor | None, offset: int) -> Tensor:
    """Negative log-likelihood of the positive for each anchor.

    Args:
        logits: ``(L, b, N)`` scores of local anchors against all candidates (float32/64).
        cand_valid: ``(L, b, N)`` bool keep-mask of (anchor, candidate) pairs or None.
        offset: index of local anchor 0's positive among the candidates.

    Returns:
        ``(b, L)`` per-anchor loss.
    """
    if cand_valid is not None:
        logits = logits.masked_fill(~cand_valid, torch.finfo(logits.dtype).min)
    logp = torch.log_softmax(logits, dim=-1)
    length, b, _ = logits.shape
    idx = torch.arange(offset, offset + b, device=logits.device)
    pos = logp.gather(-1, idx.view(1, b, 1).expand(length, b, 1)).squeeze(-1)  # (L, b)
    return -pos.transpose(0, 1)


def _contrastive(
    audio: Tensor,
    text: Tensor,
    audio_valid: Tensor | None,
    text_valid: Tensor | None,
    temperature: float | Tensor,
    direction: str,
    reduction: str,
    gather_distributed: bool,
    eps: float,
) -> Tensor:
    """Shared InfoNCE over positions. audio, text: ``(b, L, D)``; masks ``(b, L)`` or None."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"Expected direction in {_DIRECTIONS}; found {direction!r}.")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"Expected reduction in {_REDUCTIONS}; found {reduction!r}.")
    _check_temperature(temperature, audio.device)
    rank, world = _dist_state(gather_distributed)
    if world > 1 and reduction == "none":
        raise ValueError(
            "reduction='none' is per local anchor; use 'mean' or 'sum' with gather_distributed."
        )

    b = audio.shape[0]
    compute_dtype = torch.promote_types(audio.dtype, torch.float32)
    a = _normalize(audio, eps)
    t = _normalize(text, eps)
    valid_all: Tensor | None = None
    if world > 1:
        sizes = [torch.zeros(1, dtype=torch.int64, device=audio.device) for _ in range(world)]
        import torch.distributed as dist

        dist.all_gather(sizes, torch.tensor([b], dtype=torch.int64, device=audio.device))
        if any(int(s) != b for s in sizes):
            raise ValueError(
                f"gather_distributed needs the same local batch size on every rank; found "
                f"{[int(s) for s in sizes]}. Use drop_last=True in the data loader."
            )

    # One keep-mask per item and position: position l of item i exists on both sides. It decides
    # which anchors count and which candidates compete, so padding content never matters.
    valid: Tensor | None = None
    if audio_valid is not None and text_valid is not None:
        valid = audio_valid & text_valid
    else:
        valid = audio_valid if audio_valid is not None else text_valid

    def pair_mask(anchor_m: Tensor | None, cand_m: Tensor | None) -> Tensor | None:
        # (L, b_anchor, N_cand) keep-mask: both the anchor and the candidate are valid at l.
        if anchor_m is None or cand_m is None:
            return None
        return anchor_m.transpose(0, 1).unsqueeze(-1) & cand_m.transpose(0, 1).unsqueeze(1)

    if world > 1 and valid is not None:
        valid_all = _gather_mask(valid, world)

    losses: list[Tensor] = []
    offset = rank * b
    if world == 1:
        # One contraction serves both directions: logits[l, i, j] = <a_il, t_jl> / T.
        logits = torch.einsum("ild,jld->lij", a, t).to(compute_dtype) / temperature
        if direction in ("audio_to_text", "both"):
            losses.append(_direction_nll(logits, pair_mask(valid, valid), 0))
        if direction in ("text_to_audio", "both"):
            losses.append(_direction_nll(logits.transpose(1, 2), pair_mask(valid, valid), 0))
    else:
        if direction in ("audio_to_text", "both"):
            # Frozen text side: gathered without gradients (own slice keeps its graph).
            t_all = _gather_no_grad(t, rank, world)
            logits = torch.einsum("ild,jld->lij", a, t_all).to(compute_dtype) / temperature
            losses.append(_direction_nll(logits, pair_mask(valid, valid_all), offset))
        if direction in ("text_to_audio", "both"):
            # Audio candidates from every rank carry gradients back to their own rank.
            a_all = _AllGatherWithGrad.apply(a)
            logits = torch.einsum("ild,jld->lij", t, a_all).to(compute_dtype) / temperature
            losses.append(_direction_nll(logits, pair_mask(valid, valid_all), offset))

    per_anchor = losses[0] if len(losses) == 1 else 0.5 * (losses[0] + losses[1])  # (b, L)
    if valid is not None:
        per_anchor = per_anchor.masked_fill(~valid, 0.0)
    if reduction == "none":
        return per_anchor
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    count = (
        valid.sum().to(total.dtype)
        if valid is not None
        else torch.tensor(float(per_anchor.numel()), dtype=total.dtype, device=total.device)
    )
    if world > 1:
        # Each rank returns local_sum / global_count * world, so that averaging the ranks'
        # gradients (as DDP does) gives the gradient of the single-process mean.
        count = _all_reduce_sum(count) / world
    return total / count.clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# public API


def sequence_contrastive_loss(
    audio: Tensor,
    text: Tensor,
    *,
    temperature: float | Tensor = 0.15,
    text_lengths: Tensor | None = None,
    text_valid_mask: Tensor | None = None,
    audio_lengths: Tensor | None = None,
    audio_valid_mask: Tensor | None = None,
    direction: Direction = "audio_to_text",
    reduction: Reduction = "mean",
    gather_distributed: bool = False,
    eps: float = 1e-8,
) -> Tensor:
    """Sequence-level contrastive loss between audio and text-encoder states, position by position.

    For every position ``l`` and audio item ``i``, the logits over text items ``j`` are
    ``cos(audio[i, l], text[j, l]) / temperature`` and the target is ``j = i``; the loss is the
    cross-entropy averaged over valid ``(i, l)``. With the defaults this equals the original recipe's::

        cos = torch.cosine_similarity(audio.unsqueeze(1), text.unsqueeze(0), dim=-1) / 0.15
        labels = torch.arange(B).unsqueeze(1).repeat(1, L)
        loss = F.cross_entropy(cos, labels)          # materialises B x B x L x D

    but both sides are normalised first and a single batched contraction gives the ``(L, B, B)``
    logits: memory ``O(B^2 L + B L D)`` instead of ``O(B^2 L D)``.

    Args:
        audio: ``(B, L, D)`` audio-encoder states, already matched to the text length ``L``.
        text: ``(B, L, D)`` text-encoder states (usually frozen, precomputed).
        temperature: positive float, or a one-element tensor (learnable: see
            :class:`speechattn.nn.SequenceContrastiveLoss`). A tensor on the CPU is checked
            to be positive (outside ``torch.compile`` tracing); one on an accelerator is not
            read, to avoid a device sync per step, so a learnable temperature must be positive
            by construction: learn ``log_temperature`` and pass ``log_temperature.exp()``.
        text_lengths: int64 ``(B,)`` number of real caption positions; positions ``>= len`` are
            neither anchors nor negatives. Or ``text_valid_mask`` ``(B, L)`` bool, True = keep.
        audio_lengths / audio_valid_mask: the same for the audio side (rarely needed; the audio
            encoder's length matcher usually fills all ``L`` positions).
        direction: ``"audio_to_text"`` (the original recipe's), ``"text_to_audio"``, or ``"both"`` (mean of the two
            per anchor, CLIP-style symmetric).
        reduction: ``"mean"`` over valid anchors, ``"sum"``, or ``"none"`` (``(B, L)``, 0 at
            invalid anchors).
        gather_distributed: use every rank's batch as negatives via ``torch.distributed``
            all-gather (any backend). Text is gathered without gradients; audio is gathered with
            gradients only for ``text_to_audio``/``both``. Each rank's loss is scaled so that the
            mean of the ranks' gradients (what DDP computes) is the single-process gradient of
            the full batch. Needs the same local batch size on every rank.
        eps: norm floor of the cosine similarity (as in ``torch.cosine_similarity``).

    Returns:
        Scalar loss (float32 for half inputs), or ``(B, L)`` with ``reduction="none"``.
        Differentiable with respect to ``audio``, ``text`` and a tensor ``temperature``.
        Works on any device; everything stays on the inputs' device.

    Raises:
        TypeError / ValueError: for wrong types, shapes, lengths, temperature, or options.
    """
    audio = _check_float3(audio, "audio")
    text = _check_float3(text, "text")
    if audio.shape != text.shape:
        raise ValueError(
            f"Expected audio and text of the same shape (B, L, D); found audio {tuple(audio.shape)} "
            f"and text {tuple(text.shape)}. Match the audio length to the text length (pad/crop or a "
            "resampler) and project the audio width to the text width first."
        )
    if audio.device != text.device:
        raise ValueError(
            f"Expected audio and text on one device; found {audio.device} and {text.device}."
        )
    b, length, _ = audio.shape
    tv = _resolve_valid(
        text_lengths, text_valid_mask, "text", batch=b, length=length, device=audio.device
    )
    av = _resolve_valid(
        audio_lengths, audio_valid_mask, "audio", batch=b, length=length, device=audio.device
    )
    return _contrastive(
        audio, text, av, tv, temperature, direction, reduction, gather_distributed, eps
    )


def _masked_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return x.mean(1)
    w = valid.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def pooled_contrastive_loss(
    audio: Tensor,
    text: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    audio_lengths: Tensor | None = None,
    audio_valid_mask: Tensor | None = None,
    text_lengths: Tensor | None = None,
    text_valid_mask: Tensor | None = None,
    direction: Direction = "both",
    reduction: Literal["mean", "sum"] = "mean",
    gather_distributed: bool = False,
    eps: float = 1e-8,
) -> Tensor:
    """CLIP/CLAP-style InfoNCE on one vector per item (masked mean over positions).

    ``logits[i, j] = cos(mean_t audio[i], mean_u text[j]) / temperature``; cross-entropy towards
    ``j = i`` (audio to text), ``i = j`` (text to audio), or the mean of both (default, as CLIP).

    Args:
        audio: ``(B, T, D)`` (masked mean over valid ``T``) or ``(B, D)`` already pooled.
        text: ``(B, U, D)`` or ``(B, D)``; the two may have different lengths but the same ``D``.
        temperature: positive float or one-element tensor (CLIP initialises 0.07); a tensor
            is checked as in :func:`sequence_contrastive_loss` (on the CPU only, so a learnable
            one must be positive by construction, e.g. ``log_temperature.exp()``).
        audio_lengths / audio_valid_mask, text_lengths / text_valid_mask: which positions are pooled
            (int64 ``(B,)`` or bool ``(B, T)`` True = keep); padding never changes the loss.
        direction, reduction, gather_distributed, eps: as in :func:`sequence_contrastive_loss`.

    Returns:
        Scalar loss, differentiable in ``audio``, ``text`` and a tensor ``temperature``.
    """

    def pool(x: object, name: str, lengths: Tensor | None, mask: Tensor | None) -> Tensor:
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
            raise TypeError(
                f"Expected {name} to be a float tensor (B, T, D) or (B, D); found {x!r:.60}."
            )
        if x.dim() == 2:
            if lengths is not None or mask is not None:
                raise ValueError(
                    f"{name} is already pooled (B, D); drop {name}_lengths/{name}_valid_mask."
                )
            return x
        if x.dim() != 3:
            raise ValueError(
                f"Expected {name} of shape (B, T, D) or (B, D); found {tuple(x.shape)}."
            )
        valid = _resolve_valid(
            lengths, mask, name, batch=x.shape[0], length=x.shape[1], device=x.device
        )
        return _masked_mean(x, valid)

    pa = pool(audio, "audio", audio_lengths, audio_valid_mask)
    pt = pool(text, "text", text_lengths, text_valid_mask)
    if pa.shape != pt.shape:
        raise ValueError(
            f"Expected pooled audio and text of the same shape (B, D); found {tuple(pa.shape)} and "
            f"{tuple(pt.shape)}. Project the audio to the text width first."
        )
    return _contrastive(
        pa.unsqueeze(1),
        pt.unsqueeze(1),
        None,
        None,
        temperature,
        direction,
        reduction,
        gather_distributed,
        eps,
    )
