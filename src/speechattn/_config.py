"""Value checks shared by the recipes' config dataclasses.

One call per config, from its ``__post_init__``::

    check_fields(self, positive_ints=("steps", "batch_size"), positive_floats=("lr",))

Each failing field raises ``ValueError`` naming the field, what it expects and what it found, in
one style: ``Expected steps >= 1 (an int); found 0.`` A field holding ``None`` is not checked
(``None`` means "not set" in these configs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["check_fields"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_fields(
    config: Any,
    *,
    positive_ints: Iterable[str] = (),
    nonnegative_ints: Iterable[str] = (),
    positive_floats: Iterable[str] = (),
    nonnegative_floats: Iterable[str] = (),
    fractions: Iterable[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Check the named fields of ``config`` (any object with those attributes).

    Args:
        config: the config instance.
        positive_ints: fields that must be ints ``>= 1``.
        nonnegative_ints: fields that must be ints ``>= 0``.
        positive_floats: fields that must be finite numbers ``> 0`` (ints allowed, bools not).
        nonnegative_floats: fields that must be finite numbers ``>= 0``.
        fractions: fields that must be numbers in ``[0, 1)`` (dropout rates).
        choices: field -> allowed names; a tuple or list field must hold at least one name and
            only allowed ones.

    Raises:
        ValueError: the first field out of range, e.g. ``Expected steps >= 1 (an int); found 0.``
    """
    for name in positive_ints:
        value = getattr(config, name)
        if value is not None and not (_is_int(value) and value >= 1):
            raise ValueError(f"Expected {name} >= 1 (an int); found {value!r}.")
    for name in nonnegative_ints:
        value = getattr(config, name)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(f"Expected {name} >= 0 (an int); found {value!r}.")
    for name in positive_floats:
        value = getattr(config, name)
        if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"Expected {name} > 0 (a finite number); found {value!r}.")
    for name in nonnegative_floats:
        value = getattr(config, name)
        if value is not None and not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"Expected {name} >= 0 (a finite number); found {value!r}.")
    for name in fractions:
        value = getattr(config, name)
        if value is not None and not (_is_number(value) and 0 <= value < 1):
            raise ValueError(f"Expected 0 <= {name} < 1; found {value!r}.")
    for name, allowed in (choices or {}).items():
        value = getattr(config, name)
        if isinstance(value, (tuple, list)):
            if not value or any(v not in allowed for v in value):
                raise ValueError(f"Expected {name} from {tuple(allowed)}; found {value!r}.")
        elif value is not None and value not in allowed:
            raise ValueError(f"Expected {name} in {tuple(allowed)}; found {value!r}.")
