"""Contrastive loss modules holding a (optionally learnable) temperature.

Shape legend: ``b`` batch, ``l`` positions, ``d`` width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speechattn.functional.contrastive import (
    _DIRECTIONS,
    Direction,
    pooled_contrastive_loss,
    sequence_contrastive_loss,
)

__all__ = ["PooledContrastiveLoss", "SequenceContrastiveLoss"]


class _TemperatureMixin(nn.Module):
    log_temperature: Tensor

    def _init_temperature(
        self, temperature: float, learnable: bool, min_temperature: float, max_temperature: float
    ) -> None:
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError(
                "Expected 0 < min_temperature <= temperature <= max_temperature; found "
                f"{min_temperature}, {temperature}, {max_temperature}."
            )
        value = torch.tensor(math.log(temperature))
        if learnable:
            self.log_temperature = nn.Parameter(value)  # type: ignore[assignment]
        else:
            self.register_buffer("log_temperature", value)
        self.min_temperature = float(min_temperature)
        self.max_temperature = float(max_temperature)

    def _init_direction(self, direction: str) -> None:
        if direction not in _DIRECTIONS:  # at construction, not at the first forward
            raise ValueError(f"Expected direction in {_DIRECTIONS}; found {direction!r}.")

    def extra_repr(self) -> str:
        learnable = isinstance(self.log_temperature, nn.Parameter)
        return (
            f"temperature={float(self.temperature.detach()):.4g}, learnable_temperature={learnable}, "
            f"direction={getattr(self, 'direction', None)!r}"
        )

    @property
    def temperature(self) -> Tensor:
        """Current temperature ``exp(log_temperature)`` clamped to ``[min, max]`` (scalar tensor)."""
        return self.log_temperature.exp().clamp(self.min_temperature, self.max_temperature)


class SequenceContrastiveLoss(_TemperatureMixin):
    """Module form of :func:`speechattn.functional.sequence_contrastive_loss`.

    Holds ``log_temperature`` (a parameter when ``learnable_temperature=True``, else a buffer);
    the temperature used is ``exp(log_temperature)`` clamped to ``[min_temperature,
    max_temperature]`` (CLIP clamps its logit scale the same way, at 1/100).

    Args:
        temperature: initial temperature (0.15 in the original Wav2Vec2-BERT -> CLIP recipe).
        learnable_temperature: train the temperature with the model.
        min_temperature / max_temperature: clamp range.
        direction: ``"audio_to_text"``, ``"text_to_audio"`` or ``"both"``.
        gather_distributed: negatives from every rank (see the functional).

    Forward: ``(audio (B, L, D), text (B, L, D), *, text_lengths=None, text_valid_mask=None,
    audio_lengths=None, audio_valid_mask=None)`` -> scalar loss.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.15,
        learnable_temperature: bool = False,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        direction: Direction = "audio_to_text",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self._init_temperature(temperature, learnable_temperature, min_temperature, max_temperature)
        self._init_direction(direction)
        self.direction: Direction = direction
        self.gather_distributed = gather_distributed

    def forward(
        self,
        audio: Tensor,
        text: Tensor,
        *,
        text_lengths: Tensor | None = None,
        text_valid_mask: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        audio_valid_mask: Tensor | None = None,
    ) -> Tensor:
        return sequence_contrastive_loss(
            audio,
            text,
            temperature=self.temperature,
            text_lengths=text_lengths,
            text_valid_mask=text_valid_mask,
            audio_lengths=audio_lengths,
            audio_valid_mask=audio_valid_mask,
            direction=self.direction,
            gather_distributed=self.gather_distributed,
        )


class PooledContrastiveLoss(_TemperatureMixin):
    """Module form of :func:`speechattn.functional.pooled_contrastive_loss` (CLIP/CLAP InfoNCE).

    Args: as :class:`SequenceContrastiveLoss`, with CLIP's defaults (temperature 0.07,
    learnable, symmetric).

    Forward: ``(audio (B, T, D) | (B, D), text (B, U, D) | (B, D), *, audio_lengths=None,
    text_lengths=None, audio_valid_mask=None, text_valid_mask=None)`` -> scalar loss.
    """

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        direction: Direction = "both",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self._init_temperature(temperature, learnable_temperature, min_temperature, max_temperature)
        self._init_direction(direction)
        self.direction: Direction = direction
        self.gather_distributed = gather_distributed

    def forward(
        self,
        audio: Tensor,
        text: Tensor,
        *,
        audio_lengths: Tensor | None = None,
        text_lengths: Tensor | None = None,
        audio_valid_mask: Tensor | None = None,
        text_valid_mask: Tensor | None = None,
    ) -> Tensor:
        return pooled_contrastive_loss(
            audio,
            text,
            temperature=self.temperature,
            audio_lengths=audio_lengths,
            text_lengths=text_lengths,
            audio_valid_mask=audio_valid_mask,
            text_valid_mask=text_valid_mask,
            direction=self.direction,
            gather_distributed=self.gather_distributed,
        )
