"""End to end: `speechattn demo --quick` and `speechattn align` on a tiny synthetic corpus (espeak)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.test_align_recipe import check_report

from speechattn.cli import main

pytest.importorskip("espeakng_loader")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    args = ["demo", "--quick", "--out", str(out), "--no-progress", "--threads", "1"]
    assert main([*args, "--export", str(out / "exported.pt")]) == 0
    return out


def _small_manifest(demo_out: Path, tmp_path: Path, n: int) -> Path:
    """The first ``n`` utterances of the demo corpus as a manifest with absolute audio paths."""
    corpus = demo_out / "corpus"
    lines = (corpus / "manifest.jsonl").read_text().splitlines()[:n]
    small = tmp_path / "small.jsonl"
    small.write_text(
        "\n".join(json.dumps(dict(d, path=str(corpus / d["path"]))) for d in map(json.loads, lines))
    )
    return small


def test_demo_quick_outputs_are_sane(demo_out: Path) -> None:
    check_report(demo_out / "report.html")
    for png in ("alignments.png", "durations.png", "curves.png"):
        assert (demo_out / png).exists()
    metrics = json.loads((demo_out / "metrics.json").read_text())["metrics"]
    for split in ("held-out utterances", "held-out voices"):
        by = metrics[split]
        best = max(
            (v for k, v in by.items() if k not in ("uniform", "ground truth snapped to frames")),
            key=lambda m: m["phone_within_20ms"],
        )
        uniform = by["uniform"]
        # Well above the uniform floor.
        assert best["phone_within_20ms"] > uniform["phone_within_20ms"] + 25, (split, best, uniform)
        assert best["phone_mean_abs_ms"] < 0.6 * uniform["phone_mean_abs_ms"]
        assert by["ground truth snapped to frames"]["phone_within_20ms"] > 95
    # Boundary calibration (fitted on training labels) is a separate row and helps held-out items.
    by = metrics["held-out utterances"]
    raw = by["SMA aligner (HMM, SMA transitions)"]
    cal = by["SMA aligner (HMM, SMA transitions) + boundary calibration (training-voice labels)"]
    assert cal["phone_within_20ms"] > raw["phone_within_20ms"], (raw, cal)
    # The export carries the class tables fitted on the training voices (one engine here:
    # espeak, so the consensus and median tables are the same).
    from speechattn.recipes.align.pipeline import load_aligner

    info = load_aligner(demo_out / "exported.pt")[3]
    assert info["engine_offsets"]["groups"] == ["espeak"]
    assert info["consensus_offsets"]["classes"] == info["engine_offsets"]["classes"]
    assert info["engine_offsets"]["boundaries"] > 100
    # Durations sum to the frames of each utterance, and TextGrids exist beside the JSON.
    jsons = sorted((demo_out / "alignments").glob("*.json"))
    assert jsons
    for js in jsons:
        d = json.loads(js.read_text())
        assert js.with_suffix(".TextGrid").exists()
        assert all(x >= 1 for x in d["durations_frames"])
        n = sum(d["durations_frames"])
        assert d["phones"][-1]["end"] <= n * d["frame_seconds"] + 1e-9
        assert len(d["phones"]) == len(d["durations_frames"]) - 2
    # The collapse sign of each trained aligner but MHA, from the training-set decoding.
    from speechattn.recipes.align.pipeline import LONGEST_PHONE_FIELD

    sign = json.loads((demo_out / "metrics.json").read_text())["summary"][LONGEST_PHONE_FIELD]
    assert [part.split()[0] for part in sign.split(", ")] == ["sma", "fs"], sign
    assert all(part.endswith(" ms") for part in sign.split(", "))


def test_align_from_scratch_warns_when_the_trained_aligner_looks_collapsed(
    demo_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import speechattn.recipes.align.pipeline as P

    real = P.align_items

    def stretched(model, items, config, **kw):  # type: ignore[no-untyped-def]
        # The decoding of a collapsed model: the first phone of each utterance lasts 0.6 s.
        res = real(model, items, config, **kw)
        return [
            dataclasses.replace(r, phones=[(0.0, 0.6, r.phones[0][2]), *r.phones[1:]]) for r in res
        ]

    small = _small_manifest(demo_out, tmp_path, 6)
    kw = dict(from_scratch=True, steps=2, threads=1, progress=False, formats=("json",))
    lines: list[str] = []
    monkeypatch.setattr(P, "align_items", stretched)
    # collapse_retries=0: the warning only (no restart).
    with pytest.warns(UserWarning, match=r"aligner sma seed 5 looks collapsed \(600 ms > 300 ms"):
        res = P.run_align(
            small, tmp_path / "bad", seed=5, collapse_retries=0, log=lines.append, **kw
        )
    assert (
        "aligner sma seed 5: longest aligned phone, median over 6 training utterances: 600 ms"
        in lines
    )
    assert not any("restart" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "bad" / "checkpoints").iterdir()) == ["aligner.pt"]
    assert P.COLLAPSE_RESTARTS_FIELD not in res["summary"]
    assert res["summary"][P.LONGEST_PHONE_FIELD] == "600 ms"
    saved = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert saved[P.LONGEST_PHONE_FIELD] == "600 ms"
    # Applying an aligner (nothing trained) neither logs nor records the sign.
    monkeypatch.setattr(P, "align_items", real)
    lines.clear()
    res = P.run_align(
        small,
        tmp_path / "apply",
        checkpoint=tmp_path / "bad" / "aligner.pt",
        adapt=False,
        threads=1,
        progress=False,
        formats=("json",),
        log=lines.append,
    )
    assert P.LONGEST_PHONE_FIELD not in res["summary"]
    assert not any("longest aligned phone" in line for line in lines)
    # Adapting one aligner: its own decoding of the corpus gives the sign (warning only, no
    # restart); an ensemble (two files) is not checked.
    monkeypatch.setattr(P, "align_items", stretched)
    adapt = dict(adapt=True, steps=2, threads=1, progress=False, formats=("json",))
    with pytest.warns(UserWarning, match=r"adapted aligner sma seed 0 looks collapsed \(600 ms"):
        res = P.run_align(
            small, tmp_path / "adapt", checkpoint=tmp_path / "bad" / "aligner.pt", **adapt
        )
    assert res["summary"][P.LONGEST_PHONE_FIELD] == "600 ms"
    assert sorted(p.name for p in (tmp_path / "adapt" / "checkpoints").iterdir()) == ["aligner.pt"]
    lines.clear()
    res = P.run_align(
        small,
        tmp_path / "adapt2",
        checkpoint=[tmp_path / "bad" / "aligner.pt", tmp_path / "adapt" / "aligner.pt"],
        log=lines.append,
        **adapt,
    )
    assert P.LONGEST_PHONE_FIELD not in res["summary"]
    assert not any("longest aligned phone" in line for line in lines)


def test_align_from_scratch_trains_a_collapsed_aligner_again_and_keeps_the_restart(
    demo_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dataclasses

    import speechattn.recipes.align.pipeline as P

    real_train, real_align = P.train_aligner, P.align_items
    seeds: list[int] = []
    seed_of: dict[int, int] = {}  # id(model) -> its training seed

    def recording(mcfg, items, tcfg, **kw):  # type: ignore[no-untyped-def]
        seeds.append(tcfg.seed)
        res = real_train(mcfg, items, tcfg, **kw)
        seed_of[id(res.model)] = tcfg.seed
        return res

    def collapsed_first(model, items, config, **kw):  # type: ignore[no-untyped-def]
        # The first attempt (seed 5) decodes as a collapsed model: first phone 0.6 s.
        res = real_align(model, items, config, **kw)
        if seed_of.get(id(model)) != 5:
            return res
        return [
            dataclasses.replace(r, phones=[(0.0, 0.6, r.phones[0][2]), *r.phones[1:]]) for r in res
        ]

    monkeypatch.setattr(P, "train_aligner", recording)
    monkeypatch.setattr(P, "align_items", collapsed_first)
    small = _small_manifest(demo_out, tmp_path, 6)
    out = tmp_path / "retrained"
    lines: list[str] = []
    kw = dict(from_scratch=True, steps=2, threads=1, progress=False, formats=("json",))
    res = P.run_align(small, out, seed=5, log=lines.append, **kw)  # default: 1 retry
    assert seeds == [5, 1_000_005]
    assert lines[-1].startswith("aligner sma seed 5: kept restart 1 (seed 1000005), ")
    kept_ms = int(res["summary"][P.LONGEST_PHONE_FIELD].split()[0])
    assert kept_ms < 600
    # The restart's own decoding is real (2 training steps: it may still look collapsed, and
    # then, its retry spent, the run warns).
    warned = [w for w in recwarn if "looks collapsed" in str(w.message)]
    assert len(warned) == (1 if kept_ms > 300 else 0)
    assert all(
        "after 1 restart(s), keeping the lowest (seed 1000005)" in str(w.message) for w in warned
    )
    assert res["summary"][P.COLLAPSE_RESTARTS_FIELD] == (
        f"seed 5 600 ms, seed 1000005 {kept_ms} ms (kept)"
    )
    assert json.loads((out / "summary.json").read_text()) == res["summary"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "aligner-restart1.pt",
        "aligner.pt",
    ]
    # The written aligner and alignments are the restart's.
    model, _, _, info = P.load_aligner(out / "aligner.pt")
    assert [(r["seed"], r["kept"]) for r in info["collapse_restarts"]] == [
        (5, False),
        (1_000_005, True),
    ]
    restart = P.load_checkpoint(out / "checkpoints" / "aligner-restart1.pt")["model"]
    assert all(torch.equal(v, restart[k]) for k, v in model.state_dict().items())
    first_phone = [
        json.loads(f.read_text())["phones"][0] for f in (out / "alignments").glob("*.json")
    ]
    assert len(first_phone) == 6
    assert not all(abs(ph["end"] - ph["start"] - 0.6) < 1e-9 for ph in first_phone)
    # Running again resumes both finished checkpoints: the same attempts, nothing retrained.
    seeds.clear()
    again = P.run_align(small, out, seed=5, log=lines.append, **kw)
    assert seeds == [5, 1_000_005]
    assert again["summary"][P.COLLAPSE_RESTARTS_FIELD] == res["summary"][P.COLLAPSE_RESTARTS_FIELD]
    # The CLI option only applies to a new aligner: one usage line, status 2.
    capsys.readouterr()
    assert main(["align", str(small), "--out", str(tmp_path / "x"), "--collapse-retries", "2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("speechattn align: error: --collapse-retries has no effect without")


def test_demo_trains_a_collapsed_aligner_again_on_the_same_split(
    demo_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
) -> None:
    import dataclasses

    import speechattn.recipes.align.health as H
    import speechattn.recipes.align.pipeline as P

    real_train = P.train_aligner
    calls: list[tuple[int, list[str], str]] = []

    def recording(mcfg, items, tcfg, **kw):  # type: ignore[no-untyped-def]
        calls.append((tcfg.seed, [it.id for it in items], kw["checkpoint"].name))
        return real_train(mcfg, items, tcfg, **kw)

    values = iter([600.0, 150.0])  # the first attempt looks collapsed, the restart does not
    monkeypatch.setattr(P, "train_aligner", recording)
    monkeypatch.setattr(H, "longest_phone_median_ms", lambda results: next(values))
    cfg = dataclasses.replace(
        P.DemoConfig.quick(), kinds=("sma",), steps=2, dim=16, threads=1, train_seed=3
    )
    out = tmp_path / "demo"
    res = P.run_demo(
        out,
        cfg,
        export=out / "aligner.pt",
        progress=False,
        corpus_from=demo_out,
        log=lambda _: None,
    )
    # Restart seed 3 + 1000000 trains on exactly the first attempt's utterances.
    assert [(seed, ck) for seed, _, ck in calls] == [(3, "sma.pt"), (1_000_003, "sma-restart1.pt")]
    assert calls[0][1] == calls[1][1] and len(calls[0][1]) > 0
    assert not [w for w in recwarn if "looks collapsed" in str(w.message)]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary[P.LONGEST_PHONE_FIELD] == "sma 150 ms"
    assert summary[P.COLLAPSE_RESTARTS_FIELD] == "sma: seed 3 600 ms, seed 1000003 150 ms (kept)"
    assert res["collapse_restarts"]["sma"] == [
        {"seed": 3, "longest_phone_ms": 600.0, "kept": False},
        {"seed": 1_000_003, "longest_phone_ms": 150.0, "kept": True},
    ]
    model, _, _, info = P.load_aligner(out / "aligner.pt")
    assert info["collapse_restarts"] == res["collapse_restarts"]["sma"]
    restart = P.load_checkpoint(out / "checkpoints" / "sma-restart1.pt")["model"]
    assert all(torch.equal(v, restart[k]) for k, v in model.state_dict().items())


def test_align_command_trains_resumes_and_applies(
    demo_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.data.textgrid import read_textgrid

    small = _small_manifest(demo_out, tmp_path, 10)
    out = tmp_path / "scratch"
    args = [
        "align",
        str(small),
        "--out",
        str(out),
        "--from-scratch",
        "--steps",
        "4",
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    assert (out / "checkpoints" / "aligner.pt").exists()
    capsys.readouterr()
    assert main([*args, "--calibration", "contexts"]) == 1  # one error line, no traceback
    err = capsys.readouterr().err
    assert "speechattn align: error: " in err and "calibration" in err
    assert "Traceback" not in err
    tgs = sorted((out / "alignments").glob("*.TextGrid"))
    assert len(tgs) == 10
    words, phones = read_textgrid(tgs[0])
    assert len(phones) > len(words) > 0
    # Re-running continues from the finished checkpoint (nothing to redo) and gives the same result.
    before = tgs[0].read_text()
    assert main(args) == 0
    assert tgs[0].read_text() == before
    # Apply the trained aligner as is.
    out2 = tmp_path / "apply"
    ck = out / "aligner.pt"
    assert (
        main(
            [
                "align",
                str(small),
                "--out",
                str(out2),
                "--checkpoint",
                str(ck),
                "--no-adapt",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out2 / "report.html").exists()
    assert (out2 / "alignments" / tgs[0].name).read_text() == before


def test_combined_aligners_refit_the_calibration_tables(
    demo_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the training corpus, combine_aligners fits the ensemble's tables as the demo fits a
    single aligner's: an ensemble of two copies of the exported aligner decodes like it, so its
    refitted tables are the export's (same training split, same decoding)."""
    import shutil

    import speechattn.recipes.align.pipeline as P
    from speechattn.recipes.align.pipeline import combine_aligners, load_aligner

    twin = tmp_path / "twin.pt"
    shutil.copy(demo_out / "exported.pt", twin)
    # Each member's collapse sign is checked on its own decoding of 100 training utterances;
    # the second member is made to look collapsed (its real value is kept aside).
    real = P.longest_phone_median_ms
    seen: list[tuple[int, float]] = []

    def second_collapsed(results):  # type: ignore[no-untyped-def]
        seen.append((len(results), real(results)))
        return real(results) if len(seen) == 1 else 612.0

    monkeypatch.setattr(P, "longest_phone_median_ms", second_collapsed)
    lines: list[str] = []
    with pytest.warns(
        UserWarning,
        match=r"member 2 of the ensemble, from .*twin\.pt, looks "
        r"collapsed \(612 ms > 300 ms",
    ) as got:
        out = combine_aligners(
            [demo_out / "exported.pt", twin],
            tmp_path / "ens.pt",
            corpus=demo_out / "corpus" / "manifest.jsonl",
            log=lines.append,
        )
    assert len([w for w in got if "looks collapsed" in str(w.message)]) == 1
    (n1, v1), (n2, v2) = seen
    assert n1 == n2 == 100 and v1 == v2 < 300  # twins: the same decoding, healthy
    members = [line for line in lines if line.startswith("member ")]
    assert members == [
        f"member 1/2 ({demo_out / 'exported.pt'}): longest aligned phone, median over 100 "
        f"training utterances: {v1:.0f} ms",
        f"member 2/2 ({twin}): longest aligned phone, median over 100 training utterances: 612 ms",
    ]
    single = load_aligner(demo_out / "exported.pt")[3]
    ens, _, _, info = load_aligner(out)
    assert len(ens) == 2  # type: ignore[arg-type]
    for key in ("boundary_offsets", "engine_offsets", "consensus_offsets"):
        assert info[key]["boundaries"] == single[key]["boundaries"] > 100, key
        assert info[key]["classes"] == pytest.approx(single[key]["classes"], abs=1e-9), key
        assert info[key]["default"] == pytest.approx(single[key]["default"], abs=1e-9), key
    # Another corpus (another phone inventory) is refused.
    other = tmp_path / "other.jsonl"
    first = (demo_out / "corpus" / "manifest.jsonl").read_text().splitlines()[0]
    d = json.loads(first)
    d.update(path=str(demo_out / "corpus" / d["path"]), text="zebra")
    other.write_text(json.dumps(d) + "\n")
    with pytest.raises(ValueError, match="phone inventory"):
        combine_aligners([demo_out / "exported.pt", twin], tmp_path / "x.pt", corpus=other)


def test_shipped_aligner_applies_out_of_the_box(demo_out: Path, tmp_path: Path) -> None:
    from speechattn.recipes.align.pipeline import DEFAULT_ASSET, load_aligner

    if not DEFAULT_ASSET.exists():
        pytest.fail(f"the shipped aligner {DEFAULT_ASSET} is missing (see README to rebuild it)")
    model, _symbols, _feats, info = load_aligner()
    assert info.get("kind") == model.config.kind
    assert DEFAULT_ASSET.stat().st_size < 8 * 2**20
    small = _small_manifest(demo_out, tmp_path, 6)
    out = tmp_path / "shipped"
    assert main(["align", str(small), "--out", str(out), "--no-adapt", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["corpus"]
    name = next(k for k in metrics if k != "uniform")
    assert metrics[name]["phone_within_20ms"] > metrics["uniform"]["phone_within_20ms"] + 25
    assert len(list((out / "alignments").glob("*.TextGrid"))) == 6
    # The shipped aligner carries three calibration tables, fitted on its training voices'
    # labels. With the forward decoding, auto applies the consensus table: a shift every training
    # engine agrees with, so it moves word starts earlier (the model places them late), never later.
    assert info.get("boundary_offsets"), "the shipped aligner has no boundary calibration"
    demo_engines = sorted(info["demo_config"]["engines"])
    for key in ("engine_offsets", "consensus_offsets"):
        assert info.get(key), f"the shipped aligner has no {key} table"
        assert sorted(info[key]["groups"]) == demo_engines  # one per training engine
    consensus = info["consensus_offsets"]["classes"]
    engines = info["engine_offsets"]["classes"]
    for cls, v in consensus.items():  # never past the median engine, never the other way
        assert v * engines[cls] >= 0 and abs(v) <= abs(engines[cls]) + 1e-12, cls
    # By default (reverse pass on) no table applies: they were fitted with the forward decoding.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["boundary calibration"] == "off"
    assert summary["decoding"].startswith("forward + reversed")
    fwd_out = tmp_path / "forward"
    fwd = ["align", str(small), "--no-adapt", "--no-reverse-pass", "--no-progress"]
    assert main([*fwd, "--out", str(fwd_out)]) == 0
    summary = json.loads((fwd_out / "summary.json").read_text())
    assert summary["boundary calibration"] == "on (consensus)" and summary["decoding"] == "forward"
    raw_out = tmp_path / "raw"
    assert main([*fwd, "--out", str(raw_out), "--calibration", "none"]) == 0
    assert json.loads((raw_out / "summary.json").read_text())["boundary calibration"] == "off"

    def word_starts(folder: Path) -> list[float]:
        return [
            w["start"]
            for js in sorted((folder / "alignments").glob("*.json"))
            for w in json.loads(js.read_text())["words"]
        ]

    moved = [a - b for a, b in zip(word_starts(fwd_out), word_starts(raw_out))]
    assert max(moved) <= 1e-9 and min(moved) < -0.005  # earlier, never later
    cal = tmp_path / "calibrated"
    assert main([*fwd, "--out", str(cal), "--calibration", "contexts"]) == 0
    assert json.loads((cal / "summary.json").read_text())["boundary calibration"] == "on (contexts)"
    tg = sorted((fwd_out / "alignments").glob("*.TextGrid"))[0].name
    assert (fwd_out / "alignments" / tg).read_text() != (cal / "alignments" / tg).read_text()
    # The synthetic corpus follows espeak-ng's convention, which the contexts table was fitted to.
    m_cal = json.loads((cal / "metrics.json").read_text())["metrics"]["corpus"][name]
    metrics = json.loads((raw_out / "metrics.json").read_text())["metrics"]["corpus"]
    assert m_cal["phone_mean_abs_ms"] < metrics[name]["phone_mean_abs_ms"]


def test_corpus_from_trains_on_another_runs_corpus(
    demo_out: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from speechattn.data import synth

    def no_synthesis(*args: object, **kwargs: object) -> Path:
        raise AssertionError("synthesized the corpus again")

    monkeypatch.setattr(synth, "synth_corpus", no_synthesis)
    args = ["demo", "--quick", "--no-progress", "--threads", "1", "--kinds", "sma"]
    args += ["--steps", "2", "--set", "dim=16", "--corpus-from", str(demo_out)]
    out = tmp_path / "seed1"
    capfd.readouterr()
    assert main([*args, "--set", "train_seed=1", "--out", str(out)]) == 0
    assert f"reusing the corpus of {demo_out}" in capfd.readouterr().out
    assert not (out / "corpus").exists() and (out / "report.html").is_file()
    theirs = json.loads((demo_out / "metrics.json").read_text())["metrics"]
    ours = json.loads((out / "metrics.json").read_text())["metrics"]
    for split in ("held-out utterances", "held-out voices"):  # the same corpus, split in two
        assert ours[split]["uniform"]["utterances"] == theirs[split]["uniform"]["utterances"] > 0
    # another corpus setting: one line naming it, nothing written
    other = tmp_path / "other"
    assert main([*args, "--utterances", "100", "--out", str(other)]) == 1
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("speechattn demo: error: --corpus-from ")
    assert "utterances=100" in line and "utterances=160" in line
    assert not other.exists()
    assert main([*args, "--out", str(other), "--corpus-from", str(tmp_path)]) == 1
    assert "run.json not found" in capfd.readouterr().err


def test_demo_collapse_check_stops_the_first_attempt_early_and_restarts_at_once(
    demo_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    recwarn: pytest.WarningsRecorder,
) -> None:
    import dataclasses

    import speechattn.recipes.align.health as H
    import speechattn.recipes.align.pipeline as P

    real_train = P.train_aligner
    calls: list[tuple[int, str, int]] = []  # (seed, checkpoint, steps trained)

    def recording(mcfg, items, tcfg, **kw):  # type: ignore[no-untyped-def]
        res = real_train(mcfg, items, tcfg, **kw)
        calls.append((tcfg.seed, kw["checkpoint"].name, len(res.history)))
        return res

    # Early check of attempt 0: 600 ms (stop); of restart 1: 200 ms (on); restart 1 at its end.
    values = iter([600.0, 200.0, 150.0])
    sizes: list[int] = []

    def fake(results):  # type: ignore[no-untyped-def]
        sizes.append(len(results))
        return next(values)

    monkeypatch.setattr(P, "train_aligner", recording)
    monkeypatch.setattr(H, "longest_phone_median_ms", fake)
    cfg = dataclasses.replace(
        P.DemoConfig.quick(), kinds=("sma",), steps=4, dim=16, threads=1, train_seed=3
    )
    out = tmp_path / "demo"
    lines: list[str] = []
    res = P.run_demo(
        out,
        cfg,
        export=out / "aligner.pt",
        progress=False,
        corpus_from=demo_out,
        collapse_check_at=2,
        log=lines.append,
    )
    # Attempt 0 stopped after its step 2; restart 1 passed its check and trained to step 4.
    assert calls == [(3, "sma.pt", 2), (1_000_003, "sma-restart1.pt", 4)]
    assert sizes[:2] == [100, 100]  # the early check decodes 100 of the training utterances
    assert P.load_checkpoint(out / "checkpoints" / "sma.pt")["step"] == 2
    assert any(
        line.startswith("aligner sma seed 3: stopped early at step 2: longest aligned phone")
        and "600 ms > 450 ms (early check); training it again, restart 1" in line
        for line in lines
    )
    assert any("restart 1 (seed 1000003): step 2: " in line for line in lines)
    assert not [w for w in recwarn if "looks collapsed" in str(w.message)]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary[P.COLLAPSE_RESTARTS_FIELD] == (
        "sma: seed 3 stopped early at step 2 (600 ms), seed 1000003 150 ms (kept)"
    )
    assert res["collapse_restarts"]["sma"] == [
        {"seed": 3, "longest_phone_ms": 600.0, "kept": False, "stopped_early_at_step": 2},
        {"seed": 1_000_003, "longest_phone_ms": 150.0, "kept": True},
    ]
    _, _, _, info = P.load_aligner(out / "aligner.pt")
    assert info["collapse_restarts"] == res["collapse_restarts"]["sma"]
    # A step outside the training is refused before any work, as one CLI line.
    with pytest.raises(ValueError, match=r"collapse_check_at to be a step from 1 to 3"):
        P.run_demo(tmp_path / "bad", cfg, progress=False, collapse_check_at=4)
    assert not (tmp_path / "bad").exists()


def test_align_from_scratch_every_attempt_stopped_early_finishes_the_last(
    demo_out: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import speechattn.recipes.align.health as H
    import speechattn.recipes.align.pipeline as P

    real_train = P.train_aligner
    calls: list[tuple[int, str, int, int]] = []  # (seed, checkpoint, resumed from, last step)

    def recording(mcfg, items, tcfg, **kw):  # type: ignore[no-untyped-def]
        res = real_train(mcfg, items, tcfg, **kw)
        calls.append((tcfg.seed, kw["checkpoint"].name, res.resumed_from, res.history[-1]["step"]))
        return res

    values = iter([600.0, 700.0, 150.0])  # both early checks above 450 ms; the finished one
    monkeypatch.setattr(P, "train_aligner", recording)
    monkeypatch.setattr(H, "longest_phone_median_ms", lambda results: next(values))
    small = _small_manifest(demo_out, tmp_path, 6)
    out = tmp_path / "early"
    lines: list[str] = []
    kw = dict(from_scratch=True, steps=4, threads=1, progress=False, formats=("json",))
    with pytest.warns(UserWarning, match=r"every attempt \(2\) stopped early") as got:
        res = P.run_align(small, out, seed=5, log=lines.append, collapse_check_at=2, **kw)
    assert not [w for w in got if "looks collapsed" in str(w.message)]
    # Restart 1 is resumed from its step-2 checkpoint to the end, without the check.
    assert calls == [
        (5, "aligner.pt", 0, 2),
        (1_000_005, "aligner-restart1.pt", 0, 2),
        (1_000_005, "aligner-restart1.pt", 2, 4),
    ]
    assert res["summary"][P.COLLAPSE_RESTARTS_FIELD] == (
        "seed 5 stopped early at step 2 (600 ms), seed 1000005 150 ms (kept)"
    )
    _, _, _, info = P.load_aligner(out / "aligner.pt")
    assert info["collapse_restarts"] == [
        {"seed": 5, "longest_phone_ms": 600.0, "kept": False, "stopped_early_at_step": 2},
        {"seed": 1_000_005, "longest_phone_ms": 150.0, "kept": True},
    ]
    assert any("trained to the end after its early stop" in line for line in lines)
    # The option needs a new aligner: one usage line, status 2; a step past --steps: one line.
    capsys.readouterr()
    args = ["align", str(small), "--out", str(tmp_path / "x"), "--collapse-check-at", "2"]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("speechattn align: error: --collapse-check-at has no effect without")
    assert main([*args, "--from-scratch", "--steps", "2", "--no-progress"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "speechattn align: error: Expected collapse_check_at to be a step from 1 to 1 (before "
        "the last of --steps 2); found 2."
    )
