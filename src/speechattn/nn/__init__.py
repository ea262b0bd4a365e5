"""Thin modules: parameters and buffers; forward is one functional call."""

from speechattn.nn.attention import AttentionOutput, AttentionPrior, PriorMultiheadAttention

__all__: list[str] = []
__all__ += ["AttentionOutput", "AttentionPrior", "PriorMultiheadAttention"]
