"""Where the speaker recipe's time goes: wall and CPU time per phase of one command.

Runs ``speechattn speaker <args>`` (``train``, ``embed`` or ``score``) in this process, the same
code path as the console script, with :mod:`profile_demo`'s exclusive timers wrapped around the
recipe's phases: corpus loading, the feature set (``load_feature_set``) split into reading the
audio, the channel augmentation of the training copies, the log-mel front end and the rest (the
speed/pitch/formant copies, checks), the untrained log-mel statistics row, each pooling's
training, embedding, checkpoint loading and the report.

Columns: ``wall`` (perf_counter), ``cpu`` (this process's user+sys, all its threads,
``time.process_time``), ``child cpu`` and the 1-minute load average at the phase's start.

Usage::

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 nice -n 5 python benchmarks/profile_speaker.py \\
        --json runs/p.json -- train runs/pool --poolings ASTP --out runs/s0 --set steps=100 ...
    python benchmarks/profile_speaker.py --cprofile runs/s.pstats -- train ...

Everything after ``--`` goes to ``speechattn speaker``. This script imports torch before it
calls the CLI's ``main``, so the CLI's ``OMP_WAIT_POLICY=PASSIVE`` default does not apply: the
environment's ``OMP_WAIT_POLICY`` (or its absence: libgomp's spinning default) is what runs.
``OMP_NUM_THREADS`` sets torch's intra-op thread count, as for the console script.
"""

from __future__ import annotations

import os
from typing import Any

from profile_demo import _Timer, profile_command

__all__ = ["main"]


def _install(timer: _Timer) -> None:
    import speechattn.data.audio as audio
    import speechattn.recipes.speaker.data as data
    import speechattn.recipes.speaker.evaluate as ev
    import speechattn.recipes.speaker.model as model
    import speechattn.recipes.speaker.train as train

    timer.wrap(data, "load_speaker_corpus", "load corpus")
    timer.wrap(train, "load_speaker_corpus", "load corpus")
    timer.wrap(data, "load_feature_set", "feature set (other)")
    timer.wrap(train, "load_feature_set", "feature set (other)")
    timer.wrap(audio, "load_audio", "feature set: read audio")
    timer.wrap(data, "features", "feature set: log-mels")
    make_channel = data.channel_augment

    def channel_augment(cfg: Any) -> Any:
        channel = make_channel(cfg)

        def timed(*args: Any, **kwargs: Any) -> Any:
            return timer.run("feature set: channel augment", channel, *args, **kwargs)

        return timed

    data.channel_augment = channel_augment  # type: ignore[assignment]
    timer.wrap(train, "stats_baseline", "log-mel stats row")
    timer.wrap(train, "train_encoder", lambda name, *a, **k: f"train: {name}")
    timer.wrap(train, "embed_features", "embed")
    timer.wrap(ev, "embed_features", "embed")
    timer.wrap(model, "load_checkpoint", "load checkpoint")
    timer.wrap(train, "write_report", "report")


def main(argv: list[str] | None = None) -> int:
    def imports() -> Any:
        import speechattn.cli as cli
        import speechattn.recipes.speaker.train  # noqa: F401

        return cli

    def record() -> dict[str, Any]:
        import torch

        return {
            "torch_threads": torch.get_num_threads(),
            # before main's setdefault
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        }

    return profile_command("speaker", imports, _install, argv, record=record)


if __name__ == "__main__":
    raise SystemExit(main())
