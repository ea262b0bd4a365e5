"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths
from speechattn.functional.pooling import (
    attentive_mean_std,
    attentive_mean_var,
    attentive_pool_mean_std,
    attentive_statistics_pooling,
    masked_softmax,
    multi_head_attentive_statistics_pooling,
    temporal_mean_std,
)

__all__ = ["check_lengths", "lengths_to_valid_mask", "valid_mask_to_lengths"]
__all__ += [
    "attentive_mean_std",
    "attentive_mean_var",
    "attentive_pool_mean_std",
    "attentive_statistics_pooling",
    "masked_softmax",
    "multi_head_attentive_statistics_pooling",
    "temporal_mean_std",
]
