"""The demo's symbol table order (issue 19, ``DemoConfig.symbol_order``).

``"corpus"`` (the default) numbers phones in order of first appearance, exactly as before the
option existed; ``"sorted"`` numbers them by their string, so the table and the items' symbols do
not depend on the utterances' order; bad values raise a ValueError naming what was expected.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechattn.data.corpus import load_corpus
from speechattn.recipes.align.data import (
    SYMBOL_ORDERS,
    AlignItem,
    FeatureConfig,
    build_items,
    new_symbol_table,
    order_symbols,
)
from speechattn.recipes.align.pipeline import DemoConfig, demo_record

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "A big black bug bit a big black bear.",
    "Zebras graze while yaks nap in the shade.",
    "How much wood would a woodchuck chuck?",
    "Vivid jugglers thought of the azure ocean.",
]


def _corpus(tmp_path: Path) -> list[object]:
    (tmp_path / "wavs").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        name = f"wavs/u{i}.wav"
        sf.write(tmp_path / name, 0.1 * rng.standard_normal(22050 * 3).astype(np.float32), 22050)
        rows.append(
            {"id": f"u{i}", "path": name, "text": text, "speaker": "s", "sample_rate": 22050}
        )
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return list(load_corpus(tmp_path / "manifest.jsonl"))


def _build(utts: list[object], order: str) -> tuple[dict[str, int], list[AlignItem]]:
    table = new_symbol_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(utts, table, FeatureConfig(), grow_symbols=True, voice="en-us")
    assert len(items) == len(TEXTS)
    return table, order_symbols(table, items, order=order)


def _decoded(table: dict[str, int], items: list[AlignItem]) -> dict[str, list[str]]:
    name = {v: k for k, v in table.items()}
    return {it.id: [name[int(t)] for t in it.tokens] for it in items}


@pytest.fixture(scope="module")
def utts(tmp_path_factory: pytest.TempPathFactory) -> list[object]:
    return _corpus(tmp_path_factory.mktemp("symorder"))


def test_corpus_order_is_the_old_table_and_items(utts: list[object]) -> None:
    # the table as build_items grows it, and the very same items (no copy, bitwise)
    old = new_symbol_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        items = build_items(utts, old, FeatureConfig(), grow_symbols=True, voice="en-us")
    table = dict(old)
    assert order_symbols(old, items, order="corpus") is items
    assert old == table
    grown = [k for k in table if k not in new_symbol_table()]
    first_seen: list[str] = []
    for it in items:  # order of first appearance, restated
        for t in it.tokens.tolist():
            k = {v: k for k, v in table.items()}[t]
            if k not in first_seen and k not in new_symbol_table():
                first_seen.append(k)
    assert grown == first_seen
    assert grown != sorted(grown)  # this corpus tells the two orders apart


def test_sorted_table_does_not_depend_on_the_utterance_order(utts: list[object]) -> None:
    table, items = _build(utts, "sorted")
    phones = [k for k in table if k not in new_symbol_table()]
    assert phones == sorted(phones)
    assert {k: table[k] for k in new_symbol_table()} == new_symbol_table()
    assert sorted(table.values()) == list(range(len(table)))
    want = _decoded(table, items)
    corpus_table, corpus_items = _build(utts, "corpus")
    assert _decoded(corpus_table, corpus_items) == want  # the same symbols, other ids
    tables = {json.dumps(corpus_table)}
    for seed in range(3):
        shuffled = list(utts)
        random.Random(seed).shuffle(shuffled)
        t2, i2 = _build(shuffled, "sorted")
        assert t2 == table and list(t2) == list(table)
        assert _decoded(t2, i2) == want
        by_id = {it.id: it.tokens for it in i2}
        for it in items:
            assert torch.equal(by_id[it.id], it.tokens)
        tables.add(json.dumps(_build(shuffled, "corpus")[0]))
    assert len(tables) > 1  # corpus order: the table moves with the utterances


def test_bad_symbol_order_raises() -> None:
    assert SYMBOL_ORDERS == ("corpus", "sorted")
    with pytest.raises(ValueError, match=r"Expected symbol_order in .*found 'alpha'"):
        DemoConfig(symbol_order="alpha")
    with pytest.raises(ValueError, match=r"Expected symbol order in .*found 'Sorted'"):
        order_symbols(new_symbol_table(), [], order="Sorted")
    with pytest.raises(ValueError, match="reserved ids"):
        order_symbols({"a": 0, "b": 1}, [], order="sorted")
    with pytest.raises(ValueError, match=r"ids 0\.\.5"):
        order_symbols({**new_symbol_table(), "a": 4, "b": 7}, [], order="sorted")


def test_symbol_order_in_the_run_record() -> None:
    assert DemoConfig().symbol_order == "corpus"
    assert "symbol_order" not in demo_record(DemoConfig())  # older run folders still resume
    assert demo_record(DemoConfig(symbol_order="sorted"))["symbol_order"] == "sorted"
