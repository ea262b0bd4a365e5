"""Pooling layers accept WeSpeaker's positional arguments (and its swallowed keywords)."""

from __future__ import annotations

import pytest
import torch

from reference import wespeaker_pooling_reference as ref
from speechattn.nn import pooling as ours

# (class name, positional args in WeSpeaker's order, the same as keywords) at in_dim = 48.
POSITIONAL = [
    ("TAP", (48,), {"in_dim": 48}),
    ("TSDP", (48,), {"in_dim": 48}),
    ("TSTP", (48,), {"in_dim": 48}),
    ("ASTP", (48, 16), {"in_dim": 48, "bottleneck_dim": 16}),
    ("ASTP", (48, 16, True), {"in_dim": 48, "bottleneck_dim": 16, "global_context_att": True}),
    ("MHASTP", (48, 3, 4, 2, 8), {"layer_num": 3, "head_num": 4, "d_s": 2, "bottleneck_dim": 8}),
    ("MHASTP", (48, 1, 6), {"layer_num": 1, "head_num": 6}),
    ("MQMHASTP", (48, 2, 2, 8), {"layer_num": 2, "query_num": 2, "head_num": 8}),
    (
        "MQMHASTP",
        (48, 2, 3, 4, 1, 16),
        {"query_num": 3, "head_num": 4, "d_s": 1, "bottleneck_dim": 16},
    ),
    ("ASP", (3, 16), {"in_planes": 3, "acoustic_dim": 16}),
]


def _kw(name: str, kwargs: dict[str, object]) -> dict[str, object]:
    if name in ("TAP", "TSDP", "TSTP", "ASTP", "ASP") or "in_dim" in kwargs:
        return dict(kwargs)
    return {"in_dim": 48, **kwargs}


@pytest.mark.parametrize(
    ("name", "args", "kwargs"), POSITIONAL, ids=[f"{n}{a}" for n, a, _ in POSITIONAL]
)
def test_positional_matches_keywords_and_wespeaker(
    name: str, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    torch.manual_seed(0)
    pos = getattr(ours, name)(*args)
    kw = getattr(ours, name)(**_kw(name, kwargs))
    wes = getattr(ref, name)(*args)
    # Same module tree and parameter shapes as keywords and as WeSpeaker with the same positionals.
    shapes = {k: v.shape for k, v in pos.state_dict().items()}
    assert shapes == {k: v.shape for k, v in kw.state_dict().items()}
    assert shapes == {k: v.shape for k, v in wes.state_dict().items()}
    assert pos.get_out_dim() == kw.get_out_dim()
    pos.load_state_dict(wes.state_dict(), strict=True)
    pos.eval()
    wes.eval()
    x = torch.randn(2, 48, 20, dtype=torch.float64)
    pos.double()
    wes.double()
    with torch.no_grad():
        torch.testing.assert_close(pos(x), wes(x))
        assert pos(x).shape == (2, pos.get_out_dim())


def test_mqmhastp_issue_examples() -> None:
    a = ours.MQMHASTP(640, 2, 2, 8)
    assert (a.layer_num, a.query_num, a.head_num) == (2, 2, 8)
    assert a.get_out_dim() == 640 * 2 * 2
    b = ours.MQMHASTP(640, context=False)  # WeSpeaker's own example (its **kwargs swallow it)
    assert b.get_out_dim() == a.get_out_dim()
    assert ours.MHASTP(640, context=True).head_num == 2
    for cls in (ours.TAP, ours.TSDP, ours.TSTP, ours.ASTP, ours.MHASTP, ours.MQMHASTP):
        cls(64, global_context_att=False)  # ECAPA configs pass it to any pooling


def test_positional_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="in_dim divisible by head_num"):
        ours.MHASTP(48, 2, 5)
    with pytest.raises(ValueError, match="query_num >= 1"):
        ours.MQMHASTP(48, 2, 0)
    with pytest.raises(TypeError, match="layer_num to be an int"):
        ours.MQMHASTP(48, 2.0)
    with pytest.raises(ValueError, match="d_s >= 1"):
        ours.MHASTP(48, 2, 2, 0)
    with pytest.raises(TypeError):
        ours.MQMHASTP(48, 2, 2, 8, 2, 64, False)  # past WeSpeaker's positionals
    with pytest.raises(TypeError, match="unexpected keyword"):
        ours.MQMHASTP(48, heads=4)  # a typo is not swallowed


def test_pooling_names_are_classes() -> None:
    assert set(ours.POOLINGS) == {n for n in ours.__all__ if n.isupper() and n != "POOLINGS"}
    for n in ours.POOLINGS:
        assert isinstance(getattr(ours, n), type)
    from speechattn.recipes.speaker.config import POOLINGS as recipe_names

    assert recipe_names == ours.POOLINGS  # the recipe's torch-free copy of the names
