"""Range checks of the recipes' config dataclasses (``speechattn._config.check_fields``)."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import pytest

from speechattn._config import check_fields
from speechattn.cli import main
from speechattn.recipes.align.model import AlignerConfig
from speechattn.recipes.align.pipeline import DemoConfig as AlignDemoConfig
from speechattn.recipes.audio2clip.demo import DemoConfig as ClipDemoConfig


@dataclasses.dataclass
class _Cfg:
    n: Any = 1
    k: Any = 0
    lr: Any = 0.1
    w: Any = 0.0
    p: Any = 0.5
    kind: Any = "a"
    kinds: Any = ("a",)


def _check(cfg: _Cfg) -> None:
    check_fields(
        cfg,
        positive_ints=("n",),
        nonnegative_ints=("k",),
        positive_floats=("lr",),
        nonnegative_floats=("w",),
        fractions=("p",),
        choices={"kind": ("a", "b"), "kinds": ("a", "b")},
    )


def test_valid_values_and_none_pass() -> None:
    _check(_Cfg())
    _check(_Cfg(n=None, k=None, lr=None, w=None, p=None, kind=None))
    _check(_Cfg(n=3, k=0, lr=2, w=0, p=0.0, kind="b", kinds=["b", "a"]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", 0, "Expected n >= 1 (an int); found 0."),
        ("n", 2.0, "Expected n >= 1 (an int); found 2.0."),
        ("n", True, "Expected n >= 1 (an int); found True."),
        ("k", -1, "Expected k >= 0 (an int); found -1."),
        ("lr", 0.0, "Expected lr > 0 (a finite number); found 0.0."),
        ("lr", math.nan, "Expected lr > 0 (a finite number); found nan."),
        ("lr", math.inf, "Expected lr > 0 (a finite number); found inf."),
        ("lr", "1e-3", "Expected lr > 0 (a finite number); found '1e-3'."),
        ("w", -0.5, "Expected w >= 0 (a finite number); found -0.5."),
        ("p", 1.0, "Expected 0 <= p < 1; found 1.0."),
        ("kind", "c", "Expected kind in ('a', 'b'); found 'c'."),
        ("kinds", ("a", "c"), "Expected kinds from ('a', 'b'); found ('a', 'c')."),
        ("kinds", (), "Expected kinds from ('a', 'b'); found ()."),
    ],
)
def test_each_check_names_the_field_expected_and_found(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        _check(_Cfg(**{field: value}))
    assert str(info.value) == message


@pytest.mark.parametrize(
    "config", [AlignDemoConfig, AlignerConfig, ClipDemoConfig], ids=lambda c: c.__module__
)
def test_defaults_and_quick_sizes_pass(config: Any) -> None:
    config()
    if hasattr(config, "quick"):
        config.quick()


@pytest.mark.parametrize(
    ("config", "field", "value", "expected"),
    [
        (AlignDemoConfig, "steps", 0, "steps >= 1"),
        (AlignDemoConfig, "held_out_voices", -1, "held_out_voices >= 0"),
        (AlignDemoConfig, "lr", 0.0, "lr > 0"),
        (AlignDemoConfig, "kinds", ("sma", "ctc"), "kinds from ('sma', 'fs', 'mha')"),
        (AlignDemoConfig, "mha_prior", "gaussian", "mha_prior in"),
        (AlignerConfig, "dim", 0, "dim >= 1"),
        (AlignerConfig, "dropout", 1.0, "0 <= dropout < 1"),
        (AlignerConfig, "prior_scaling", -1.0, "prior_scaling > 0"),
        (ClipDemoConfig, "epochs", 0, "epochs >= 1"),
        (ClipDemoConfig, "heldout_voices", 0, "heldout_voices >= 1"),
        (ClipDemoConfig, "temperature", 0.0, "temperature > 0"),
        (ClipDemoConfig, "ctc_weight", -1.0, "ctc_weight >= 0"),
    ],
)
def test_configs_reject_out_of_range_values(
    config: Any, field: str, value: Any, expected: str
) -> None:
    with pytest.raises(ValueError, match=f"^Expected {re.escape(expected)}.*; found"):
        config(**{field: value})
    with pytest.raises(ValueError, match=f"Expected {re.escape(expected)}"):
        dataclasses.replace(config(), **{field: value})


def test_clip_overrides_reject_out_of_range_values() -> None:
    with pytest.raises(ValueError, match=r"Expected passes >= 1 \(an int\); found 0\."):
        ClipDemoConfig.from_overrides(["passes=0"])


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--set", "steps=0", "--no-progress"],
        ["audio2clip", "demo", "--set", "epochs=0"],
    ],
)
def test_cli_out_of_range_set_is_a_usage_error(
    argv: list[str], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and ">= 1 (an int); found 0." in err
    assert "Traceback" not in err
    assert not out.exists()
