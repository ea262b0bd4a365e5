"""Thin modules: parameters and buffers; forward is one functional call."""

__all__: list[str] = []
