"""Pure math: one module per mechanism. Everything here is differentiable torch code."""

from speechattn.functional.masks import check_lengths, lengths_to_valid_mask, valid_mask_to_lengths
from speechattn.functional.priors import (
    BetaBinomialPrior,
    DiagonalPrior,
    PriorAttentionOutput,
    beta_binomial_bias,
    beta_binomial_prior,
    diagonal_bias,
    diagonal_score_mod,
    guided_attention_loss,
    guided_attention_weights,
    post_softmax_penalty_attention,
    prior_attention,
    seed_attention_penalty,
)

__all__ = ["check_lengths", "lengths_to_valid_mask", "valid_mask_to_lengths"]
__all__ += [
    "BetaBinomialPrior",
    "DiagonalPrior",
    "PriorAttentionOutput",
    "beta_binomial_bias",
    "beta_binomial_prior",
    "diagonal_bias",
    "diagonal_score_mod",
    "guided_attention_loss",
    "guided_attention_weights",
    "post_softmax_penalty_attention",
    "prior_attention",
    "seed_attention_penalty",
]
