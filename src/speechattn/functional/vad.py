"""Energy voice-activity detection on log-mel frames (Kaldi ``compute-vad`` style).

Shape legend: ``b`` batch, ``t`` frames, ``m`` mel bins.

Every frame gets a log-energy ``e_t = logsumexp_m(x_tm)``: the natural log of the frame's
mel-band power when ``x`` is a natural-log mel spectrogram (any per-utterance constant, e.g. the
``gain`` normalisation of the speaker recipe, shifts every frame alike and changes nothing; after
CMN it is the energy of the band-equalised frame). A frame is *loud* when ``e_t`` is at least
``threshold = quantile(e, ref_quantile) - range_db * ln(10) / 10`` over the utterance's valid
frames: within ``range_db`` dB of the utterance's speech level, taken as a high quantile of its
frame energies (robust to a few clicks, independent of how much of the clip is silence). Kaldi
instead thresholds ``5.0 + 0.5 * mean(log_energy)`` on raw 16-bit energies, which for typical
16-bit speech keeps frames down to about 30 dB under the speech level; our features are level
normalised, so the rule is written relative to the utterance. A frame is *kept* when at least
``proportion`` of the valid frames in ``[t - context, t + context]`` are loud (Kaldi's
``--vad-frames-context`` / ``--vad-proportion-threshold``; the SRE recipes' ``vad.conf`` uses 2 and
0.12, i.e. one loud frame in five, which pads speech by two frames on each side). When fewer than
``min_frames`` frames are kept (a short or silent clip), every valid frame is kept: the output is
never empty and never NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask

__all__ = [
    "VAD_CONTEXT",
    "VAD_MIN_FRAMES",
    "VAD_PROPORTION",
    "VAD_RANGE_DB",
    "VAD_REF_QUANTILE",
    "EnergyVadOutput",
    "energy_vad",
    "frame_log_energy",
]

#: Default range under the speech level kept as speech (dB): Kaldi's defaults translated.
VAD_RANGE_DB = 30.0
#: Default quantile of the frame energies taken as the utterance's speech level.
VAD_REF_QUANTILE = 0.9
#: Default half-width of the vote window (frames), as Kaldi SRE recipes' ``vad.conf``.
VAD_CONTEXT = 2
#: Default share of loud frames in the window for a frame to be kept (Kaldi SRE ``vad.conf``).
VAD_PROPORTION = 0.12
#: Default fewest kept frames; fewer keeps the whole utterance (0.5 s at a 10 ms hop).
VAD_MIN_FRAMES = 50


class EnergyVadOutput(NamedTuple):
    """:func:`energy_vad`'s result.

    ``feats`` ``(b, t', m)``: each item's kept frames, in order, from frame 0, zeros after
    (``t'`` the largest kept count); ``feats_lengths`` int64 ``(b,)`` the kept counts;
    ``keep_valid_mask`` bool ``(b, t)``: which input frames were kept (False on padding).
    """

    feats: Tensor
    feats_lengths: Tensor
    keep_valid_mask: Tensor


def frame_log_energy(feats: Tensor) -> Tensor:
    """Per-frame log-energy ``(b, t)`` (or ``(t,)``) of natural-log mel frames ``(b, t, m)``
    (or ``(t, m)``): ``logsumexp`` over the mel bins, computed in float32 or wider."""
    x = feats if feats.dtype in (torch.float32, torch.float64) else feats.float()
    return torch.logsumexp(x, dim=-1)


def _check(feats: object, name: str) -> Tensor:
    if not isinstance(feats, Tensor):
        raise TypeError(f"Expected {name} as a torch.Tensor; found {type(feats).__name__}.")
    if feats.dim() != 3:
        raise ValueError(f"Expected {name} (B, T, M); found shape {tuple(feats.shape)}.")
    if not feats.is_floating_point():
        raise TypeError(f"Expected {name} as floating point; found {feats.dtype}.")
    return feats


def energy_vad(
    feats: Tensor,
    feats_lengths: Tensor | None = None,
    *,
    range_db: float = VAD_RANGE_DB,
    ref_quantile: float = VAD_REF_QUANTILE,
    context: int = VAD_CONTEXT,
    proportion: float = VAD_PROPORTION,
    min_frames: int = VAD_MIN_FRAMES,
) -> EnergyVadOutput:
    """Drop the non-speech frames of a padded batch of log-mel frames (see the module doc).

    Args:
        feats: ``(b, t, m)`` natural-log mel frames (any per-utterance offset), padded.
        feats_lengths: int ``(b,)`` valid frames per item (``0 < len <= t``); None = all ``t``.
            Padding content never changes an output.
        range_db: frames down to this many dB under the speech level are loud (> 0).
        ref_quantile: the quantile of the valid frames' energies taken as the speech level, in
            ``[0, 1]`` (linear interpolation, as :func:`torch.quantile`).
        context: half-width of the vote window in frames (>= 0).
        proportion: share of loud valid frames in the window needed to keep a frame, ``[0, 1]``.
        min_frames: an item with fewer kept frames keeps every valid frame (>= 1).

    Returns:
        :class:`EnergyVadOutput` ``(feats (b, t', m), feats_lengths (b,), keep_valid_mask (b, t))``.
        Not differentiable through the frame selection (a gather of the input frames).

    Raises:
        TypeError: ``feats`` not a floating-point tensor.
        ValueError: ``feats`` not 3-D; bad lengths; a setting out of range.

    Naive equivalent, per item ``f = feats[i, :len_i]``::

        e = torch.logsumexp(f, -1)
        loud = e >= torch.quantile(e, ref_quantile) - range_db * math.log(10) / 10
        keep = [loud[max(0, t - c):t + c + 1].float().mean() >= proportion for t in range(len_i)]
        out = f[keep] if sum(keep) >= min_frames else f
    """
    feats = _check(feats, "feats")
    b, t, m = feats.shape
    if not (isinstance(range_db, (int, float)) and range_db > 0 and math.isfinite(range_db)):
        raise ValueError(f"Expected range_db > 0 (dB); found {range_db!r}.")
    if not (isinstance(ref_quantile, (int, float)) and 0.0 <= ref_quantile <= 1.0):
        raise ValueError(f"Expected ref_quantile in [0, 1]; found {ref_quantile!r}.")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"Expected context >= 0 (an int, frames); found {context!r}.")
    if not (isinstance(proportion, (int, float)) and 0.0 <= proportion <= 1.0):
        raise ValueError(f"Expected proportion in [0, 1]; found {proportion!r}.")
    if isinstance(min_frames, bool) or not isinstance(min_frames, int) or min_frames < 1:
        raise ValueError(f"Expected min_frames >= 1 (an int); found {min_frames!r}.")
    if b == 0 or t == 0:
        raise ValueError(f"Expected at least one item and one frame; found shape {(b, t, m)}.")
    lengths = check_lengths(feats_lengths, "feats_lengths", batch=b, max_len=t, device=feats.device)
    valid = lengths_to_valid_mask(lengths, t)  # (b, t)
    energy = frame_log_energy(feats).double()
    # quantile over the valid frames: padding sorts last (+inf), linear interpolation
    srt = torch.sort(energy.masked_fill(~valid, math.inf), dim=1).values
    pos = ref_quantile * (lengths.double() - 1.0)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo.double()
    e_lo = srt.gather(1, lo[:, None])[:, 0]
    e_hi = srt.gather(1, hi[:, None])[:, 0]
    ref = e_lo + frac * (e_hi - e_lo)
    threshold = ref - range_db * math.log(10.0) / 10.0
    loud = (energy >= threshold[:, None]) & valid
    # window vote: loud valid frames / valid frames in [t - context, t + context]
    width = 2 * context + 1
    kernel = torch.ones(1, 1, width, dtype=torch.float64, device=feats.device)
    num = F.conv1d(loud.double()[:, None], kernel, padding=context)[:, 0]
    den = F.conv1d(valid.double()[:, None], kernel, padding=context)[:, 0]
    keep = (num >= proportion * den - 1e-9) & valid
    few = keep.sum(1) < min_frames
    keep = torch.where(few[:, None], valid, keep)
    new_lengths = keep.sum(1)
    # kept frames first, in order (stable sort of "not kept")
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    t_out = int(new_lengths.max())
    idx = order[:, :t_out]
    out = feats.gather(1, idx[:, :, None].expand(b, t_out, m))
    out_valid = lengths_to_valid_mask(new_lengths, t_out)
    out = out.masked_fill(~out_valid[:, :, None], 0.0)
    return EnergyVadOutput(out, new_lengths, keep)
