"""The aligner reads symbol ids only as rows of its embedding (issue 19, branch symlottery).

Renumbering the phones (a permutation of the non-reserved ids, as another corpus order or
``symbol_order="sorted"`` gives) must change nothing but which initial embedding row each phone
gets: training on the renumbered tokens from the same initial weights with the embedding rows
moved along must give the same losses, the same weights (rows moved) and the same decoded
durations. A control without the rows moved must differ, so the check can fail.
"""

from __future__ import annotations

import dataclasses

import torch
from tests.align_toy import FEATURES, N_MELS, NUM_SYMBOLS, toy_items

from speechattn.recipes.align.data import AlignItem, new_symbol_table
from speechattn.recipes.align.evaluate import align_items
from speechattn.recipes.align.model import AlignerConfig, TextMelAligner
from speechattn.recipes.align.train import TrainConfig, train_aligner

CFG = AlignerConfig(kind="sma", num_symbols=NUM_SYMBOLS, n_mels=N_MELS, dim=16)
TRAIN = TrainConfig(steps=12, batch_size=6, seed=5, warmup=3, weight_decay=0.01)


def _permutation() -> list[int]:
    """old id -> new id: the reserved ids (pad, unk, sil, sp) fixed, the phone ids shuffled."""
    reserved = len(new_symbol_table())
    phones = list(range(reserved, NUM_SYMBOLS))
    g = torch.Generator().manual_seed(11)
    shuffled = [phones[int(k)] for k in torch.randperm(len(phones), generator=g)]
    perm = list(range(reserved)) + shuffled
    assert sorted(perm) == list(range(NUM_SYMBOLS)) and perm != list(range(NUM_SYMBOLS))
    return perm


def _renumbered(items: list[AlignItem], perm: list[int]) -> list[AlignItem]:
    out = []
    for it in items:
        tokens = torch.tensor([perm[int(t)] for t in it.tokens], dtype=torch.int64)  # a loop
        out.append(dataclasses.replace(it, tokens=tokens))
    return out


def _moved_rows(state: dict[str, torch.Tensor], perm: list[int]) -> dict[str, torch.Tensor]:
    """The same weights with embedding row ``old`` at row ``perm[old]``."""
    moved = {k: v.clone() for k, v in state.items()}
    for old, new in enumerate(perm):
        moved["embed.weight"][new] = state["embed.weight"][old]
    return moved


def _durations(model: TextMelAligner, items: list[AlignItem]) -> list[list[int]]:
    res = align_items(model.eval(), items, FEATURES, pauses="auto")
    return [[int(d) for d in r.durations] for r in res]


def _train(items: list[AlignItem], init: dict[str, torch.Tensor]) -> tuple[list[float], dict]:
    res = train_aligner(CFG, items, TRAIN, init_state=init, progress=False)
    losses = [float(h["loss"]) for h in res.history if "loss" in h]
    return losses, res


def test_renumbered_phones_train_and_decode_the_same_with_moved_rows() -> None:
    items = toy_items(18, 0)
    perm = _permutation()
    renumbered = _renumbered(items, perm)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in TextMelAligner(CFG).state_dict().items()}

    losses_a, res_a = _train(items, init)
    losses_b, res_b = _train(renumbered, _moved_rows(init, perm))
    assert len(losses_a) == TRAIN.steps and losses_a == losses_b

    state_a, state_b = res_a.model.state_dict(), res_b.model.state_dict()
    for name, value in state_a.items():
        if name == "embed.weight":
            for old, new in enumerate(perm):
                torch.testing.assert_close(state_b[name][new], value[old], rtol=0, atol=0)
        else:
            torch.testing.assert_close(state_b[name], value, rtol=0, atol=0, msg=name)
    assert _durations(res_a.model, items) == _durations(res_b.model, renumbered)

    # Control: the renumbered tokens with the rows NOT moved (another deal of the initial
    # embeddings, as a corpus-order change gives) train otherwise.
    losses_c, _ = _train(renumbered, init)
    assert losses_c[0] != losses_a[0] and losses_c != losses_a
