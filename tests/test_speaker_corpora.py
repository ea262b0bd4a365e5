"""Speaker recipe on real-corpus layouts (VoxCeleb folder, Kaldi data dir, manifest), trial lists,
person ids, pseudo-speakers, resuming and refusing another run's checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli_run import run_cli as _main

from speechattn.recipes.speaker.config import SpeakerConfig
from speechattn.recipes.speaker.data import (
    load_feature_set,
    load_speaker_corpus,
    pitch_shift,
    read_trials,
    speed_perturb,
)

SR = 16000
TINY = [
    "--steps",
    "4",
    "--poolings",
    "TSTP",
    "--augment-copies",
    "0",
    "--no-progress",
    "--set",
    "channels=16",
    "embed_dim=16",
    "min_frames=20",
    "max_frames=60",
    "batch_size=8",
    "checkpoint_every=2",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """16 espeak utterances of 4 voices, laid out as VoxCeleb, Kaldi and a manifest."""
    pytest.importorskip("espeakng_loader")
    from speechattn.data.synth import synth_corpus

    base = tmp_path_factory.mktemp("spkcorpus")
    manifest = synth_corpus(
        base / "synth", utterances=16, speakers=4, seed=3, sample_rate=SR, progress=False
    )
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    voices = sorted({r["speaker"] for r in recs})
    spk_id = {v: f"id1000{i}" for i, v in enumerate(voices)}
    vox = base / "vox"
    kaldi = base / "kaldi"
    kaldi.mkdir()
    lines_scp, lines_u2s, man = [], [], []
    for n, r in enumerate(recs):
        src = manifest.parent / r["path"]
        rel = Path(spk_id[r["speaker"]]) / f"video{n % 2}" / f"{n:05d}.wav"
        (vox / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, vox / rel)
        lines_scp.append(f"utt{n:03d} {src}")
        lines_u2s.append(f"utt{n:03d} {spk_id[r['speaker']]}")
        person = "p01" if spk_id[r["speaker"]] in ("id10000", "id10001") else None
        man.append({"audio": f"../vox/{rel.as_posix()}", "speaker": spk_id[r["speaker"]]})
        if person:
            man[-1]["person"] = person
    (kaldi / "wav.scp").write_text("\n".join(lines_scp) + "\n")
    (kaldi / "utt2spk").write_text("\n".join(lines_u2s) + "\n")
    (base / "man").mkdir()
    (base / "man" / "corpus.jsonl").write_text("\n".join(json.dumps(m) for m in man) + "\n")
    files = sorted(p.relative_to(vox).as_posix() for p in vox.rglob("*.wav"))
    trials = []
    for i in range(len(files)):
        for j in range(i + 1, len(files), 3):
            trials.append(f"{int(files[i][:7] == files[j][:7])} {files[i]} {files[j]}")
    (base / "trials.txt").write_text("\n".join(trials) + "\n")
    return {
        "vox": vox,
        "kaldi": kaldi,
        "manifest": base / "man" / "corpus.jsonl",
        "trials": base / "trials.txt",
    }


def test_layouts_read_the_same_speakers(corpus: dict[str, Path]) -> None:
    vox = load_speaker_corpus(corpus["vox"])
    kaldi = load_speaker_corpus(corpus["kaldi"])
    man = load_speaker_corpus(corpus["manifest"])
    assert len(vox) == len(kaldi) == len(man) == 16
    assert vox[0].id == "id10000/video0/00000.wav" or vox[0].id.startswith("id1000")
    for utts in (vox, kaldi, man):
        assert sorted({u.speaker for u in utts}) == [f"id1000{i}" for i in range(4)]
        assert all(u.audio_path.is_file() for u in utts)
    # same files, same speakers, whatever the layout
    by_file = {u.audio_path.resolve(): u.speaker for u in vox}
    assert {u.audio_path.resolve(): u.speaker for u in man} == by_file
    # two voices of one person are one training identity
    assert sorted({u.label for u in man}) == ["id10002", "id10003", "p01"]
    assert sorted({u.label for u in vox}) == [f"id1000{i}" for i in range(4)]


def test_layout_errors_name_the_file(tmp_path: Path, corpus: dict[str, Path]) -> None:
    k = tmp_path / "k"
    k.mkdir()
    (k / "wav.scp").write_text("u1 sox a.wav -t wav - |\n")
    (k / "utt2spk").write_text("u1 s1\n")
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match="piped command"):
            load_speaker_corpus(k)
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 2 and "piped command" in msgs[0] and "skipped 1 malformed" in msgs[1]
    (k / "utt2spk").unlink()
    with pytest.raises(ValueError, match="utt2spk"):
        load_speaker_corpus(k)
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio": "a.wav"}\n')
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match=r"m.jsonl:1: expected an object with 'audio'"):
            load_speaker_corpus(bad)
    msgs = [str(w.message) for w in record]
    assert (
        len(msgs) == 2
        and "m.jsonl:1: expected an object" in msgs[0]
        and "skipped 1 malformed" in msgs[1]
    )
    t = tmp_path / "t.txt"
    t.write_text("1 a.wav\n")
    with pytest.warns(UserWarning) as record:
        with pytest.raises(ValueError, match=r"t.txt:1: expected '<1\|0>"):
            read_trials(t, tmp_path)
    msgs = [str(w.message) for w in record]
    assert (
        len(msgs) == 2
        and "t.txt:1: expected '<1|0>" in msgs[0]
        and "skipped 1 malformed" in msgs[1]
    )
    t.write_text("1 a.wav b.wav\n")
    with pytest.raises(ValueError, match="non-target"):
        read_trials(t, tmp_path)


@pytest.mark.parametrize("layout", ["vox", "kaldi", "manifest"])
def test_train_on_each_layout_with_trials(
    corpus: dict[str, Path], tmp_path: Path, layout: str
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    argv = ["speaker", "train", str(corpus[layout]), "--out", str(out), *TINY]
    argv += ["--trials", str(corpus["trials"]), "--trials-root", str(corpus["vox"])]
    assert _main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    n_trials = len(corpus["trials"].read_text().splitlines())
    assert res["num_trials"] == n_trials and res["test_voices"] == []
    assert [r["pooling"] for r in res["rows"]] == ["log-mel stats (no training)", "TSTP"]
    for r in res["rows"]:
        assert 0.0 <= r["eer"] <= 1.0 and np.isfinite(r["min_dcf"])
    # the manifest merges two voices of one person into one speaker
    assert res["num_training_classes"] == (3 if layout == "manifest" else 4)
    assert (out / "checkpoints" / "TSTP.pt").is_file()


def test_train_counts_malformed_trial_lines(
    corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    trials = tmp_path / "trials.txt"
    good = corpus["trials"].read_text().splitlines()
    trials.write_text("\n".join([*good, "2 a.wav"]) + "\n")
    out = tmp_path / "run"
    argv = ["speaker", "train", str(corpus["vox"]), "--out", str(out), *TINY]
    rc = _main([*argv, "--trials", str(trials), "--trials-root", str(corpus["vox"])])
    err = capsys.readouterr().err  # the CLI prints each warning as one line
    assert rc == 0 and err.count(f"trials.txt:{len(good) + 1}: expected") == 1
    res = json.loads((out / "results.json").read_text())
    assert res["num_trials"] == len(good)
    assert res["malformed_trial_lines"] == 1 and res["skipped_trials"] == 1


def test_score_command(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    argv = ["speaker", "score", str(corpus["trials"]), "--root", str(corpus["vox"])]
    assert _main([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num_trials"] == len(corpus["trials"].read_text().splitlines())
    assert 0.0 <= res["eer"] <= 1.0 and 0.0 <= res["baseline_eer"] <= 1.0
    assert _main(["speaker", "score", str(tmp_path / "missing.txt")]) == 1


def test_resume_continues_exactly_and_refuses_another_run(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from speechattn.recipes.speaker import train as T

    cfg = SpeakerConfig(
        channels=16, embed_dim=16, steps=6, batch_size=8, min_frames=20, max_frames=60,
        augment_copies=0, checkpoint_every=2, seed=1,
    )  # fmt: skip
    fs = load_feature_set(load_speaker_corpus(corpus["vox"]), cfg)
    classes = sorted(set(fs.labels))
    labels = [classes.index(s) for s in fs.labels]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = T.train_encoder("TSTP", fs.feats, labels, cfg, progress=False)
        ck = tmp_path / "ck" / "TSTP.pt"
        real = T.random_crops
        calls = {"n": 0}

        def interrupted(*args: object, **kwargs: object) -> object:
            calls["n"] += 1
            if calls["n"] == 6:  # the probe batch, then steps 1-4: stop during step 5
                raise KeyboardInterrupt
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(T, "random_crops", interrupted)
        with pytest.raises(KeyboardInterrupt):
            T.train_encoder("TSTP", fs.feats, labels, cfg, progress=False, checkpoint=ck)
        monkeypatch.setattr(T, "random_crops", real)
        assert torch.load(ck, weights_only=True)["step"] == 4
        resumed = T.train_encoder("TSTP", fs.feats, labels, cfg, progress=False, checkpoint=ck)
    finally:
        torch.set_num_threads(threads)
    assert resumed.resumed_from == 4
    assert resumed.losses == whole.losses
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    cfg.steps = 8
    with pytest.raises(T.ResumeMismatch, match=r"steps 6 -> 8.*--overwrite"):
        T.train_encoder("TSTP", fs.feats, labels, cfg, progress=False, checkpoint=ck)


def test_cli_refuses_to_reuse_another_runs_output(corpus: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    base = ["speaker", "train", str(corpus["vox"]), "--out", str(out), *TINY]
    assert _main(base) == 0
    assert _main([*base, "--seed", "5"]) == 1  # another seed: refused, nothing overwritten
    assert _main([*base, "--seed", "5", "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 5


def test_cli_validates_options_at_parse_time() -> None:
    for bad in (["--steps", "0"], ["--poolings", "XYZ"], ["--trunk", "lstm"], ["--seed", "-1"]):
        with pytest.raises(SystemExit) as exc:
            _main(["speaker", "synth", *bad])
        assert exc.value.code == 2
    assert _main(["speaker", "synth", "--set", "nonsense=1"]) == 2
    assert _main(["speaker", "synth", "--set", "speed_perturb=1.0"]) == 2
    assert _main(["speaker", "synth", "--set", "trunk=ecapa", "channels=30"]) == 2


def test_speed_and_pitch_perturbation() -> None:
    t = np.arange(SR) / SR
    x = (0.5 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)

    def peak_hz(y: np.ndarray) -> float:
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)])

    fast = speed_perturb(x, SR, 1.1)
    assert abs(len(fast) - len(x) / 1.1) <= 2
    assert peak_hz(fast) == pytest.approx(220.0, abs=2.0)
    up = pitch_shift(x, SR, 2.0)
    assert len(up) == len(x)
    assert peak_hz(up) == pytest.approx(200.0 * 2 ** (2 / 12), abs=3.0)
    down = pitch_shift(x, SR, -3.0)
    assert peak_hz(down) == pytest.approx(200.0 * 2 ** (-3 / 12), abs=3.0)


def test_pseudo_speakers_only_for_training_speakers(corpus: dict[str, Path]) -> None:
    utts = load_speaker_corpus(corpus["manifest"])
    cfg = SpeakerConfig(augment_copies=1, speed_perturb=[0.9, 1.1], pitch_perturb=[2.0])
    fs = load_feature_set(utts, cfg, train_labels={"p01"})
    n_p01 = sum(u.label == "p01" for u in utts)
    n_other = len(utts) - n_p01
    # p01: original + 2 speeds + 1 pitch, each with 1 channel copy; others: as read
    assert len(fs.feats) == 8 * n_p01 + n_other
    counts = {lab: fs.labels.count(lab) for lab in set(fs.labels)}
    assert counts["p01"] == counts["p01@speed0.9"] == counts["p01@pitch+2"] == 2 * n_p01
    assert counts["id10002"] == sum(u.label == "id10002" for u in utts)
    # a speed-perturbed copy is a different length, a pitch-shifted one is not
    i = fs.labels.index("p01")
    j = fs.labels.index("p01@speed1.1")
    k = fs.labels.index("p01@pitch+2")
    assert fs.ids[i] == fs.ids[j] == fs.ids[k]
    assert abs(len(fs.feats[j]) - len(fs.feats[i]) / 1.1) <= 2
    assert abs(len(fs.feats[k]) - len(fs.feats[i])) <= 1


def test_ecapa_trunk_trains_from_the_cli(corpus: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "ecapa"
    argv = ["speaker", "train", str(corpus["vox"]), "--out", str(out), *TINY]
    assert _main([*argv, "trunk=ecapa", "--save-checkpoint", str(out / "best.pt")]) == 0
    from speechattn.recipes.speaker import load_checkpoint

    model, cfg = load_checkpoint(out / "best.pt")
    assert cfg.trunk == "ecapa" and model.trunk_name == "ecapa"


@pytest.mark.slow
def test_torchrun_train_on_a_corpus_and_resume(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Two gloo processes train on the VoxCeleb layout; the same command again resumes."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", "29519", "-m", "speechattn", "speaker", "train", str(corpus["vox"])]
    cmd += ["--out", str(tmp_path), "--trials", str(corpus["trials"]), *TINY]
    for attempt in range(2):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        rows = json.loads((tmp_path / "results.json").read_text())["rows"]
        assert rows[1]["pooling"] == "TSTP" and len(rows[1]["losses"]) == 4
        assert rows[1]["resumed_from"] == (0 if attempt == 0 else 4)
    ck = torch.load(tmp_path / "checkpoints" / "TSTP.pt", weights_only=True)
    assert ck["fingerprint"]["world"] == 2 and len(ck["rng"]) == 2


def test_any_load_corpus_layout_works(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A folder of audio + same-stem .txt (read by data.corpus.load_corpus): speaker = folder."""
    root = tmp_path / "folder"
    for u in load_speaker_corpus(corpus["vox"])[:6]:
        d = root / u.speaker
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(u.audio_path, d / Path(u.id).name)
        (d / Path(u.id).with_suffix(".txt").name).write_text("some words\n")
    utts = load_speaker_corpus(root)
    assert len(utts) == 6
    assert {u.speaker for u in utts} <= {f"id1000{i}" for i in range(4)}


def test_ctrl_c_says_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from speechattn.recipes.speaker import train as T

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "run_speaker", stop)
    out = tmp_path / "run"
    assert _main(["speaker", "train", str(tmp_path), "--out", str(out), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and str(out / "checkpoints") in err and "resume" in err
