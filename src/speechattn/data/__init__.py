"""Corpora, text front end, features and collate. Heavy dependencies import lazily."""

__all__: list[str] = []
