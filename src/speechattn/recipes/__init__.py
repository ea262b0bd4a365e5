"""End-to-end jobs that the CLI runs. Each module exposes ``add_parser(subparsers)``."""

__all__: list[str] = []
