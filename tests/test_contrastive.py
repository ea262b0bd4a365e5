"""Contrastive losses: seed formula equality, gradients, masks, permutation, distributed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.contrastive_ref import loop_pooled_loss, loop_sequence_loss, seed_contrastive_loss

from speechattn.functional import pooled_contrastive_loss, sequence_contrastive_loss
from speechattn.nn import PooledContrastiveLoss, SequenceContrastiveLoss


def _pair(b: int, length: int, d: int, *, seed: int = 0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(b, length, d, generator=g, dtype=dtype).to(device)
    text = torch.randn(b, length, d, generator=g, dtype=dtype).to(device)
    return audio, text


def test_equals_seed_formula_value_and_grads(device: torch.device) -> None:
    audio, text = _pair(5, 7, 16, device=device)
    a1 = audio.clone().requires_grad_(True)
    t1 = text.clone().requires_grad_(True)
    ref = seed_contrastive_loss(a1, t1)
    ref.backward()
    a2 = audio.clone().requires_grad_(True)
    t2 = text.clone().requires_grad_(True)
    ours = sequence_contrastive_loss(a2, t2)
    ours.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a2.grad, a1.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t2.grad, t1.grad, rtol=1e-10, atol=1e-12)


def test_float32_close_to_float64_seed() -> None:
    audio, text = _pair(8, 11, 32, seed=3)
    ref = seed_contrastive_loss(audio, text)
    ours = sequence_contrastive_loss(audio.float(), text.float())
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("direction", ["audio_to_text", "text_to_audio", "both"])
def test_matches_loop_reference_with_mask(direction: str) -> None:
    audio, text = _pair(4, 6, 5, seed=1)
    lengths = torch.tensor([6, 3, 1, 4])
    valid = torch.arange(6) < lengths[:, None]
    ours = sequence_contrastive_loss(audio, text, text_lengths=lengths, direction=direction)
    if direction == "text_to_audio":
        # Loop reference written for anchors = text: swap roles, masks stay on the text side.
        ref = _loop_t2a(audio, text, valid)
    else:
        ref = loop_sequence_loss(audio, text, 0.15, valid, direction)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def _loop_t2a(audio: torch.Tensor, text: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    b, length, _ = audio.shape
    total, count = audio.new_zeros(()), 0
    for j in range(b):
        for pos in range(length):
            if not valid[j, pos]:
                continue
            s = torch.stack(
                [
                    torch.cosine_similarity(text[j, pos], audio[i, pos], dim=0) / 0.15
                    for i in range(b)
                    if valid[i, pos]
                ]
            )
            pos_score = torch.cosine_similarity(text[j, pos], audio[j, pos], dim=0) / 0.15
            total = total + torch.logsumexp(s, 0) - pos_score
            count += 1
    return total / count


def test_padding_content_does_not_change_loss() -> None:
    audio, text = _pair(4, 6, 5, seed=2)
    lengths = torch.tensor([6, 2, 5, 3])
    valid = torch.arange(6) < lengths[:, None]
    base = sequence_contrastive_loss(audio, text, text_lengths=lengths, direction="both")
    text2 = torch.where(valid[..., None], text, torch.randn_like(text) * 100)
    audio2 = torch.where(valid[..., None], audio, torch.randn_like(audio) * 100)
    other = sequence_contrastive_loss(audio2, text2, text_valid_mask=valid, direction="both")
    torch.testing.assert_close(base, other, rtol=1e-12, atol=1e-12)
    # And the mask really matters: without it the padded content changes the value.
    assert not torch.allclose(sequence_contrastive_loss(audio2, text2), base)


def test_reduction_none_and_sum() -> None:
    audio, text = _pair(3, 4, 6, seed=4)
    lengths = torch.tensor([4, 2, 3])
    per = sequence_contrastive_loss(audio, text, text_lengths=lengths, reduction="none")
    assert per.shape == (3, 4)
    assert per[1, 2:].eq(0).all() and per[2, 3] == 0
    total = sequence_contrastive_loss(audio, text, text_lengths=lengths, reduction="sum")
    mean = sequence_contrastive_loss(audio, text, text_lengths=lengths)
    torch.testing.assert_close(per.sum(), total)
    torch.testing.assert_close(total / 9, mean)


@pytest.mark.parametrize("direction", ["audio_to_text", "both"])
def test_gradcheck(direction: str) -> None:
    audio, text = _pair(3, 4, 5, seed=5)
    audio.requires_grad_(True)
    text.requires_grad_(True)
    temp = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])

    def f(a: torch.Tensor, t: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return sequence_contrastive_loss(a, t, temperature=tau, text_lengths=lengths, direction=direction)

    assert torch.autograd.gradcheck(f, (audio, text, temp))
    assert torch.autograd.gradcheck(
        lambda a, t, tau: pooled_contrastive_loss(a, t, temperature=tau, audio_lengths=lengths),
        (audio, text, temp),
    )


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(2, 6),
    length=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    direction=st.sampled_from(["audio_to_text", "text_to_audio", "both"]),
    masked=st.booleans(),
)
def test_invariant_to_joint_permutation(
    b: int, length: int, seed: int, direction: str, masked: bool
) -> None:
    audio, text = _pair(b, length, 4, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(1, length + 1, (b,), generator=g) if masked else None
    perm = torch.randperm(b, generator=g)
    base = sequence_contrastive_loss(audio, text, text_lengths=lengths, direction=direction)
    permuted = sequence_contrastive_loss(
        audio[perm],
        text[perm],
        text_lengths=None if lengths is None else lengths[perm],
        direction=direction,
    )
    torch.testing.assert_close(base, permuted, rtol=1e-10, atol=1e-12)
    # Permuting only one side breaks the pairing and changes the loss (unless perm is identity).
    if not torch.equal(perm, torch.arange(b)) and not masked:
        assert not torch.allclose(base, sequence_contrastive_loss(audio[perm], text, direction=direction))


def test_pooled_matches_loop_reference() -> None:
    audio, text = _pair(4, 5, 6, seed=6)
    ours = pooled_contrastive_loss(audio, text, temperature=0.1)
    torch.testing.assert_close(ours, loop_pooled_loss(audio, text, 0.1), rtol=1e-12, atol=1e-12)
    # Pooled inputs (B, D) and different sequence lengths are accepted.
    ours2 = pooled_contrastive_loss(audio.mean(1), text[:, :3], temperature=0.1)
    torch.testing.assert_close(ours2, loop_pooled_loss(audio, text[:, :3], 0.1))


def test_pooled_padding_invariance() -> None:
    audio, text = _pair(3, 6, 4, seed=7)
    lengths = torch.tensor([6, 2, 4])
    valid = torch.arange(6) < lengths[:, None]
    base = pooled_contrastive_loss(audio, text, audio_lengths=lengths)
    junk = torch.where(valid[..., None], audio, torch.full_like(audio, 1e3))
    torch.testing.assert_close(pooled_contrastive_loss(junk, text, audio_lengths=lengths), base)


def test_learnable_temperature_module() -> None:
    audio, text = _pair(4, 3, 8, seed=8, dtype=torch.float32)
    loss_mod = SequenceContrastiveLoss(temperature=0.15, learnable_temperature=True)
    assert isinstance(loss_mod.log_temperature, torch.nn.Parameter)
    torch.testing.assert_close(loss_mod.temperature, torch.tensor(0.15))
    loss = loss_mod(audio, text)
    torch.testing.assert_close(loss, sequence_contrastive_loss(audio, text))
    loss.backward()
    assert loss_mod.log_temperature.grad is not None and loss_mod.log_temperature.grad != 0
    fixed = SequenceContrastiveLoss(temperature=0.2)
    assert "log_temperature" in dict(fixed.named_buffers())
    assert not list(fixed.parameters())
    pooled = PooledContrastiveLoss()
    assert pooled(audio, text).requires_grad
    with pytest.raises(ValueError, match="min_temperature"):
        SequenceContrastiveLoss(temperature=0.001)


def test_errors_name_the_argument() -> None:
    audio, text = _pair(2, 3, 4)
    with pytest.raises(ValueError, match=r"same shape.*audio \(2, 3, 4\).*text \(2, 5, 4\)"):
        sequence_contrastive_loss(audio, torch.zeros(2, 5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        sequence_contrastive_loss(audio[0], text[0])
    with pytest.raises(TypeError, match="floating"):
        sequence_contrastive_loss(audio.long(), text.long())
    with pytest.raises(ValueError, match="temperature > 0"):
        sequence_contrastive_loss(audio, text, temperature=0.0)
    with pytest.raises(ValueError, match=r"text_lengths\[1\] = 4"):
        sequence_contrastive_loss(audio, text, text_lengths=torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="direction"):
        sequence_contrastive_loss(audio, text, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        sequence_contrastive_loss(
            audio, text, text_lengths=torch.tensor([1, 2]), text_valid_mask=torch.ones(2, 3).bool()
        )
    with pytest.raises(ValueError, match="process group"):
        sequence_contrastive_loss(audio, text, gather_distributed=True)


def test_no_nan_when_an_item_is_all_padding_but_one() -> None:
    audio, text = _pair(3, 4, 5, seed=9)
    lengths = torch.tensor([1, 1, 1])
    audio.requires_grad_(True)
    loss = sequence_contrastive_loss(audio, text, text_lengths=lengths, direction="both")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(audio.grad).all()
    assert audio.grad[:, 1:].eq(0).all()


def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    world = 2
    audio, text = _pair(6, 5, 8, seed=11, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4, 1, 3, 5])  # unequal valid counts across the two ranks
    cases = [
        {"name": "a2t", "kind": "sequence", "direction": "audio_to_text", "text_lengths": None},
        {"name": "both_masked", "kind": "sequence", "direction": "both", "text_lengths": lengths},
        {"name": "t2a_masked", "kind": "sequence", "direction": "text_to_audio", "text_lengths": lengths},
        {"name": "pooled", "kind": "pooled", "direction": "both", "text_lengths": None},
    ]
    torch.save({"audio": audio, "text": text, "cases": cases}, tmp_path / "inputs.pt")
    worker = Path(__file__).with_name("_contrastive_dist_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "inputs.pt"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for case in cases:
        a = audio.clone().requires_grad_(True)
        if case["kind"] == "sequence":
            loss = sequence_contrastive_loss(
                a, text, text_lengths=case["text_lengths"], direction=case["direction"]
            )
        else:
            loss = pooled_contrastive_loss(a, text, temperature=0.1, direction=case["direction"])
        loss.backward()
        losses = torch.stack([ranks[r][case["name"]][0] for r in range(world)])
        # DDP averages over ranks: the mean of rank losses / gradients is the single-process one.
        torch.testing.assert_close(losses.mean(), loss.detach(), rtol=1e-10, atol=1e-12)
        grads = torch.cat([ranks[r][case["name"]][1] for r in range(world)]) / world
        torch.testing.assert_close(grads, a.grad, rtol=1e-10, atol=1e-12)
