"""Thin modules: parameters and buffers; forward is one functional call."""

from speechattn.nn.contrastive import PooledContrastiveLoss, SequenceContrastiveLoss

__all__: list[str] = ["PooledContrastiveLoss", "SequenceContrastiveLoss"]
