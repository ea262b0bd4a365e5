"""Thin modules: parameters and buffers; forward is one functional call."""

from speechattn.nn.attention import AttentionOutput, AttentionPrior, PriorMultiheadAttention
from speechattn.nn.monotonic import SMAOutput, StepwiseMonotonicMultiheadAttention

__all__: list[str] = []
__all__ += ["AttentionOutput", "AttentionPrior", "PriorMultiheadAttention"]
__all__ += ["SMAOutput", "StepwiseMonotonicMultiheadAttention"]
