"""A user's-eye audit of the aligner ensemble files, boundary refinement and the contrastive
losses' temperature: bad input gives a clear ValueError/TypeError or a one-line usage error."""

from __future__ import annotations

import pytest
import torch

from speechattn.functional.contrastive import (
    pooled_contrastive_loss,
    sequence_contrastive_loss,
)

SR = 16000


# --- contrastive temperature -------------------------------------------------------------


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, 8, generator=g), torch.randn(3, 4, 8, generator=g)


def test_tensor_temperature_forms_agree_with_the_float() -> None:
    a, t = _pair()
    want = sequence_contrastive_loss(a, t, temperature=0.07)
    for temp in (torch.tensor(0.07), torch.tensor([0.07]), torch.tensor([[0.07]])):
        torch.testing.assert_close(sequence_contrastive_loss(a, t, temperature=temp), want)
    learn = torch.tensor(0.07, requires_grad=True)
    sequence_contrastive_loss(a, t, temperature=learn).backward()
    assert learn.grad is not None and torch.isfinite(learn.grad) and learn.grad != 0


@pytest.mark.parametrize("loss", [sequence_contrastive_loss, pooled_contrastive_loss])
def test_infinite_temperature_is_refused(loss) -> None:
    # 1 / inf makes every logit 0: the loss is log(B) whatever the inputs, a silent no-op.
    a, t = _pair()
    for temp in (float("inf"), torch.tensor(float("inf")), torch.tensor([float("inf")])):
        with pytest.raises(ValueError, match="finite temperature > 0"):
            loss(a, t, temperature=temp)


@pytest.mark.parametrize("loss", [sequence_contrastive_loss, pooled_contrastive_loss])
def test_bool_or_complex_temperature_tensor_is_a_type_error(loss) -> None:
    # A Python True is refused; a bool tensor used to pass as temperature 1, a complex one
    # failed deep inside torch.
    a, t = _pair()
    for temp in (torch.tensor(True), torch.tensor(0.07 + 0j)):
        with pytest.raises(TypeError, match=r"real .*temperature tensor"):
            loss(a, t, temperature=temp)


def test_temperature_on_another_device_is_named() -> None:
    a, t = _pair()
    with pytest.raises(ValueError, match=r"inputs' device cpu.*meta"):
        sequence_contrastive_loss(a, t, temperature=torch.tensor(0.07, device="meta"))
    # on the meta device throughout: shapes only, nothing read
    out = sequence_contrastive_loss(
        a.to("meta"), t.to("meta"), temperature=torch.tensor([0.07], device="meta")
    )
    assert out.device.type == "meta" and out.shape == ()
