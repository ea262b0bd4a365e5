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

import argparse
import json
import os
import sys
import time
from typing import Any

from profile_demo import _children_cpu, _Timer

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
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write the phase table here")
    p.add_argument("--cprofile", help="also run under cProfile and dump its stats here")
    args = p.parse_args(own)

    timer = _Timer()
    load0 = os.getloadavg()
    w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()

    def imports() -> Any:
        import speechattn.cli as cli
        import speechattn.recipes.speaker.train  # noqa: F401

        return cli

    cli = timer.run("imports", imports)
    _install(timer)
    import torch

    threads = torch.get_num_threads()
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset)")  # before main's setdefault
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        rc = prof.runcall(timer.run, "other (unwrapped)", cli.main, ["speaker", *cmd])
        prof.dump_stats(args.cprofile)
    else:
        rc = timer.run("other (unwrapped)", cli.main, ["speaker", *cmd])
    total = {
        "wall": time.perf_counter() - w0,
        "cpu": time.process_time() - c0,
        "child_cpu": _children_cpu() - k0,
    }
    print(f"\ntorch threads {threads}, OMP_WAIT_POLICY={policy}")
    print(f"{'phase':<34}{'calls':>6}{'wall s':>9}{'cpu s':>9}{'child s':>9}{'load':>6}")
    for name, r in timer.rows.items():
        print(
            f"{name:<34}{int(r['calls']):>6}{r['wall']:>9.1f}{r['cpu']:>9.1f}"
            f"{r['child_cpu']:>9.1f}{r['load']:>6.2f}"
        )
    print(
        f"{'total':<34}{'':>6}{total['wall']:>9.1f}{total['cpu']:>9.1f}"
        f"{total['child_cpu']:>9.1f}{load0[0]:>6.2f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "args": cmd,
                    "torch_threads": threads,
                    "omp_wait_policy": policy,
                    "phases": timer.rows,
                    "total": total,
                    "load_start": load0,
                    "load_end": os.getloadavg(),
                },
                f,
                indent=1,
            )
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
