"""Adapters to reference APIs (keonlee SMA, WeSpeaker pooling). Imported explicitly."""

__all__: list[str] = []
