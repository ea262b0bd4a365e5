"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

from speechattn.functional.contrastive import pooled_contrastive_loss, sequence_contrastive_loss
from speechattn.functional.masks import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths

__all__ = [
    "check_lengths",
    "lengths_to_valid_mask",
    "pooled_contrastive_loss",
    "sequence_contrastive_loss",
    "valid_mask_to_lengths",
]
