"""Thin modules: parameters and buffers; forward is one functional call."""

from speechattn.nn.pooling import ASP, ASTP, MHASTP, MQMHASTP, TAP, TSDP, TSTP

__all__: list[str] = []
__all__ += ["ASP", "ASTP", "MHASTP", "MQMHASTP", "TAP", "TSDP", "TSTP"]
