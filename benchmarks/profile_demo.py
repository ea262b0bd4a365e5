"""Where `speechattn demo`'s time goes: wall and CPU time per phase of one run.

Runs ``speechattn demo <args>`` in this process (the same code path as the console script)
with timers wrapped around the pipeline's phases: imports, synthesis, corpus loading, feature
extraction, each aligner's training (its dev probes apart), aligning the held-out splits, the
training-set decoding for boundary calibration, the uniform and oracle rows, scoring, the
pocketsphinx word row, TextGrid writing and the report. Each phase's time is its own (a phase
called inside another, e.g. the dev probe inside training, is subtracted from the outer one).

Columns: ``wall`` (perf_counter), ``cpu`` (this process's user+sys, ``time.process_time``),
``child cpu`` (finished child processes' user+sys: the synthesis workers and engine
subprocesses, pocketsphinx runs in-process) and the 1-minute load average at the phase's start.
The machine is shared, so wall time depends on load; CPU time much less.

Usage::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/profile_demo.py --json runs/prof.json \\
        -- --out runs/prof_demo --no-progress
    python benchmarks/profile_demo.py --cprofile runs/demo.pstats -- --out ... --quick

Everything after ``--`` goes to ``speechattn demo``. This script imports torch before it calls
the CLI's ``main``, which sets ``OMP_WAIT_POLICY=PASSIVE`` only when torch is not loaded yet:
set ``OMP_WAIT_POLICY=PASSIVE`` in the environment to profile what the console script runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["main", "profile_command"]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class _Timer:
    """Exclusive wall/CPU accounting over nested phases."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = defaultdict(
            lambda: {"calls": 0, "wall": 0.0, "cpu": 0.0, "child_cpu": 0.0, "load": 0.0}
        )
        self.stack: list[list[float]] = []  # per open phase: time spent in nested phases
        self.names: list[str] = []  # the open phases, outermost first

    def run(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        load = os.getloadavg()[0]
        w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        self.stack.append([0.0, 0.0, 0.0])
        self.names.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            inner = self.stack.pop()
            self.names.pop()
            dw = time.perf_counter() - w0
            dc = time.process_time() - c0
            dk = _children_cpu() - k0
            row = self.rows[name]
            if row["calls"] == 0:
                row["load"] = load
            row["calls"] += 1
            row["wall"] += dw - inner[0]
            row["cpu"] += dc - inner[1]
            row["child_cpu"] += dk - inner[2]
            if self.stack:
                outer = self.stack[-1]
                outer[0] += dw
                outer[1] += dc
                outer[2] += dk

    def wrap(self, module: Any, attr: str, label: Callable[..., str] | str) -> None:
        fn = getattr(module, attr)

        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            name = label if isinstance(label, str) else label(*args, **kwargs)
            return self.run(name, fn, *args, **kwargs)

        setattr(module, attr, wrapped)


def _install(timer: _Timer) -> None:
    import speechattn.data.corpus as corpus
    import speechattn.data.synth as synth
    import speechattn.recipes.align.pipeline as pipe

    def align_label(model: Any, items: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(model, str):
            return f"align: {model}"
        where = "dev probe" if any(n.startswith("train:") for n in timer.names) else "align"
        kind = getattr(getattr(model, "config", None), "kind", "?")
        pauses = kwargs.get("pauses", "forced")
        return f"{where}: {kind} ({pauses})"

    timer.wrap(synth, "synth_corpus", "synthesis")
    timer.wrap(corpus, "load_corpus", "load corpus")
    timer.wrap(pipe, "build_items", "features (build_items)")
    timer.wrap(pipe, "augmented_items", "augmentation")
    timer.wrap(pipe, "train_aligner", lambda cfg, *a, **k: f"train: {cfg.kind}")
    timer.wrap(pipe, "align_items", align_label)
    timer.wrap(pipe, "fit_boundary_offsets", "calibration fit")
    timer.wrap(pipe, "fit_class_offsets", "class offsets fit (--export)")
    timer.wrap(pipe, "calibrate_results", "calibrate results")
    timer.wrap(pipe, "_oracle", "oracle row")
    timer.wrap(pipe, "score", "score")
    timer.wrap(pipe, "_word_table", "word table (pocketsphinx)")
    timer.wrap(pipe, "write_alignment", "write TextGrids")
    timer.wrap(pipe, "write_report_safe", "report + plots")
    timer.wrap(pipe, "save_aligner", "export")


def profile_command(
    command: str,
    imports: Callable[[], Any],
    install: Callable[[_Timer], None],
    argv: list[str] | None = None,
    *,
    record: Callable[[], dict[str, Any]] = dict,
) -> int:
    """Run ``speechattn <command> <args after -->`` in this process under a :class:`_Timer`.

    ``imports`` loads the CLI (timed as "imports") and returns ``speechattn.cli``; ``install``
    wraps the command's phases; ``record()`` (called after the imports, before the run) gives
    extra lines for the printout and fields for ``--json`` (e.g. the thread count). Own flags
    before ``--``: ``--json FILE`` (the phase table), ``--cprofile FILE`` (cProfile stats).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    doc = sys.modules["__main__"].__doc__ or __doc__ or ""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--json", help="write the phase table here")
    p.add_argument("--cprofile", help="also run under cProfile and dump its stats here")
    args = p.parse_args(own)

    timer = _Timer()
    load0 = os.getloadavg()
    w0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    cli = timer.run("imports", imports)
    install(timer)
    extra = record()
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        rc = prof.runcall(timer.run, "other (unwrapped)", cli.main, [command, *cmd_args])
        prof.dump_stats(args.cprofile)
    else:
        rc = timer.run("other (unwrapped)", cli.main, [command, *cmd_args])
    total = {
        "wall": time.perf_counter() - w0,
        "cpu": time.process_time() - c0,
        "child_cpu": _children_cpu() - k0,
    }
    print()
    for key, value in extra.items():
        print(f"{key}: {value}")
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
                    "args": cmd_args,
                    **extra,
                    "phases": timer.rows,
                    "total": total,
                    "load_start": load0,
                    "load_end": os.getloadavg(),
                },
                f,
                indent=1,
            )
    return int(rc or 0)


def main(argv: list[str] | None = None) -> int:
    def imports() -> Any:
        import speechattn.cli as cli
        import speechattn.recipes.align.pipeline  # noqa: F401  (what `demo` imports first)

        return cli

    return profile_command("demo", imports, _install, argv)


if __name__ == "__main__":
    raise SystemExit(main())
