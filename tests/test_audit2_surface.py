"""A user's-eye audit of the aligner ensemble files, boundary refinement and the contrastive
losses' temperature: bad input gives a clear ValueError/TypeError or a one-line usage error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.align_toy import FEATURES, tone_corpus
from tests.test_align_ensemble import _model, _save
from tests.test_align_refine import EDGES, FRAME_S, TWO_WORDS, _measure

from speechattn.functional.contrastive import (
    pooled_contrastive_loss,
    sequence_contrastive_loss,
)
from speechattn.recipes.align.data import new_symbol_table
from speechattn.recipes.align.edges import (
    SpectralTransition,
    energy_envelope,
    refine_boundaries,
    spectral_transition,
)
from speechattn.recipes.align.model import AlignerEnsemble
from speechattn.recipes.align.pipeline import combine_aligners, load_aligner, save_aligner

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


# --- refine_boundaries / spectral_transition -----------------------------------------------


def test_refine_boundaries_refuses_unordered_or_nonfinite_edges() -> None:
    tr = _measure([(0.5, 1.0), (0.36, 1.0)])
    swapped = EDGES.copy()
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(ValueError, match=r"non-decreasing edges.*edge 4"):
        refine_boundaries(TWO_WORDS, swapped, tr, FRAME_S)
    with pytest.raises(ValueError, match="non-decreasing"):
        refine_boundaries(TWO_WORDS, EDGES[::-1], tr, FRAME_S)
    for k in (2, 3):  # a NaN next to a moved boundary used to fail inside math.ceil
        bad = EDGES.copy()
        bad[k] = np.nan
        with pytest.raises(ValueError, match=rf"finite edges.*index {k}"):
            refine_boundaries(TWO_WORDS, bad, tr, FRAME_S)
    # well-formed edges still move (the guard does not change the result)
    moved = refine_boundaries(TWO_WORDS, EDGES, tr, FRAME_S)
    assert moved[3] == pytest.approx(0.5, abs=1e-6) and moved[2] == pytest.approx(0.36, abs=1e-6)


def test_refine_boundaries_refuses_a_nonfinite_measure() -> None:
    # It used to return the edges unmoved, silently, for the whole utterance.
    tr = _measure([(0.5, 1.0)])
    v = tr.value.copy()
    v[10] = np.nan
    with pytest.raises(ValueError, match=r"finite transition measure.*frame 10"):
        refine_boundaries(TWO_WORDS, EDGES, SpectralTransition(v, tr.hop_s), FRAME_S)


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    f = np.where(t < t[-1] / 2, 300.0, 1200.0)
    return (0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_spectral_transition_input_types() -> None:
    x = _speechlike(8000)
    want = spectral_transition(x, SR).value
    # a numpy integer rate (e.g. from soundfile/np arrays) is a rate
    np.testing.assert_array_equal(spectral_transition(x, np.int64(SR)).value, want)
    # float64 tensor and int16 samples: the same measure (it ignores the gain)
    got = spectral_transition(torch.from_numpy(x).double(), SR).value
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    pcm = np.round(x * 30000).astype(np.int16)
    np.testing.assert_allclose(spectral_transition(pcm, SR).value, want, rtol=0.02, atol=1e-4)
    for bad in (x.astype(np.complex64), x > 0):
        with pytest.raises(TypeError, match="real waveform"):
            spectral_transition(bad, SR)
    for rate in (16000.0, True, 0):
        with pytest.raises(ValueError, match="sample_rate"):
            spectral_transition(x, rate)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mono waveform of shape \(n,\)"):
        spectral_transition(torch.from_numpy(x)[None], SR)
    # the energy envelope (silence edges) shares the input checks
    np.testing.assert_array_equal(
        energy_envelope(x, np.int64(SR)).level_db, energy_envelope(x, SR).level_db
    )
    with pytest.raises(TypeError, match="real waveform"):
        energy_envelope(x.astype(np.complex64), SR)


# --- combine-aligners ----------------------------------------------------------------------


def _two(tmp_path: Path) -> tuple[Path, Path]:
    symbols = new_symbol_table()
    return _save(tmp_path / "a.pt", _model(0), symbols), _save(
        tmp_path / "b.pt", _model(1), symbols
    )


def test_combine_aligners_out_folder_is_refused_before_work(tmp_path: Path) -> None:
    a, _ = _two(tmp_path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match="file path to write; found the folder"):
        # the aligners are not even read: a missing one would be named otherwise
        combine_aligners([a, tmp_path / "missing.pt"], tmp_path / "dir", log=lambda _: None)
    assert not (tmp_path / "dir.tmp").exists()


def test_combine_aligners_cli_usage_errors(tmp_path: Path, capsys) -> None:
    from speechattn.cli import main

    a, b = _two(tmp_path)
    (tmp_path / "dir").mkdir()
    assert main(["combine-aligners", str(a), str(b), "--out", str(tmp_path / "dir")]) == 2
    err = capsys.readouterr().err
    assert "found a folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "dir.tmp").exists()
    assert main(["combine-aligners", str(a), str(b), "--out", str(a / "e.pt")]) == 2
    err = capsys.readouterr().err
    assert "below the file" in err and len(err.strip().splitlines()) == 1
    assert main(["combine-aligners", str(a), "--out", str(tmp_path / "one.pt")]) == 2
    assert "two or more" in capsys.readouterr().err
    assert not (tmp_path / "one.pt").exists()
    # A missing folder is made; one file already holding an ensemble is re-saved.
    ens = tmp_path / "new" / "sub" / "e.pt"
    assert main(["combine-aligners", str(a), str(b), "--out", str(ens)]) == 0
    again = tmp_path / "again.pt"
    assert main(["combine-aligners", str(ens), "--out", str(again), "--no-progress"]) == 0
    model = load_aligner(again)[0]
    assert isinstance(model, AlignerEnsemble) and len(model) == 2


def test_combine_aligners_names_how_a_corpus_inventory_differs(tmp_path: Path) -> None:
    symbols = new_symbol_table()
    info = {"trained_by": "speechattn demo", "kind": "sma", "demo_config": {"seed": 0}}
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for seed, path in enumerate(paths):
        save_aligner(path, _model(seed), symbols, FEATURES, info)
    corpus = tone_corpus(tmp_path / "corpus", {"u0": "hello there"}, noise=0.01)
    with pytest.raises(ValueError, match=r"0 of theirs missing and \d+ unknown to them \(e\.g\."):
        combine_aligners(paths, tmp_path / "e.pt", corpus=corpus, log=lambda _: None)
    assert not (tmp_path / "e.pt").exists()


def test_an_aligner_given_twice_is_refused(tmp_path: Path, capsys) -> None:
    from speechattn.cli import main
    from speechattn.recipes.align.pipeline import load_aligners

    a, b = _two(tmp_path)
    # An ensemble of a model with itself is that model at twice the cost: a slip, said so.
    link = tmp_path / "link.pt"
    link.symlink_to(a)
    for paths in ([a, a], [a, b, link]):
        with pytest.raises(ValueError, match=r"each aligner once.*\.pt given twice"):
            load_aligners(paths)
    assert main(["combine-aligners", str(a), str(a), "--out", str(tmp_path / "e.pt")]) == 1
    err = capsys.readouterr().err
    assert "given twice" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.pt").exists()


def test_calibration_error_with_several_files_names_why(tmp_path: Path) -> None:
    from speechattn.recipes.align.pipeline import DEFAULT_ASSET, _members, run_align

    if not DEFAULT_ASSET.is_file():
        pytest.skip("no shipped aligner")
    shipped, symbols, feats, info = load_aligner()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    for path, member in zip((a, b), _members(shipped)):
        save_aligner(path, member, symbols, feats, info)  # each file keeps the shipped tables
    data = tone_corpus(tmp_path / "corpus", {"u1": "a dog"}, noise=0.005)
    with pytest.raises(ValueError, match=r"several files: no member's table.*combine-aligners"):
        run_align(
            data,
            tmp_path / "out",
            checkpoint=[a, b],
            adapt=False,
            calibration="consensus",
            progress=False,
            log=lambda _: None,
        )


def test_combine_aligners_never_overwrites_an_input(tmp_path: Path, capsys) -> None:
    from speechattn.cli import main

    a, b = _two(tmp_path)
    before = a.read_bytes()
    with pytest.raises(ValueError, match="one of the aligners to combine"):
        combine_aligners([a, b], tmp_path / "." / "a.pt", log=lambda _: None)
    assert main(["combine-aligners", str(a), str(b), "--out", str(a)]) == 2
    err = capsys.readouterr().err
    assert "replace that aligner" in err and len(err.strip().splitlines()) == 1
    assert a.read_bytes() == before


def test_refine_and_edge_checks_take_numpy_floats() -> None:
    import numpy as np

    from speechattn.recipes.align.edges import (
        check_refine_fraction,
        check_refine_radius_s,
        check_silence_edge_db,
    )

    assert check_refine_fraction(np.float32(0.75)) == 0.75
    assert check_refine_radius_s(np.float32(0.03)) == pytest.approx(0.03)
    assert check_silence_edge_db(np.float32(35.0)) == 35.0
    for check in (check_refine_fraction, check_refine_radius_s, check_silence_edge_db):
        with pytest.raises(TypeError):
            check(np.bool_(True))
        with pytest.raises(TypeError):
            check("0.5")


def test_refine_fraction_given_without_refinement_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from speechattn.cli import main

    # Even the default value, given explicitly, does nothing without --refine-boundaries.
    assert main(["align", "corpus.jsonl", "--out", "o", "--refine-fraction", "1"]) == 2
    err = capsys.readouterr().err
    assert "--refine-fraction" in err and len(err.strip().splitlines()) == 1
