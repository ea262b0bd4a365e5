"""Fast and slow processes of the SMA recurrence benchmark: N fresh processes, classified.

``bench_sma.py --section recurrence`` at 2 threads gives fwd+bwd ~1.5 ms with ~1.7-2.1 ms of
process CPU per call in some processes and ~2.3 ms with ~6 ms of CPU in others. This script
runs the same call (``stepwise_monotonic_alignment(..., impl="numba")`` + ``alpha.sum()
.backward()``, B=16, U=100, T=800, ragged lengths, float32) in ``--procs`` fresh processes and
reports per process, over ``--blocks`` blocks of ``--calls`` calls:

- ``wall``: median wall ms per call (median over calls, then the blocks' median and range);
- ``bench cpu``: the benchmark's figure, the median over calls of ``time.process_time()``
  around one call;
- ``true cpu``: CPU ms per call from every thread's ``/proc/self/task/*/schedstat`` run time
  summed over the whole block (exact: no per-call sampling);
- ``other@tick``: share of calls whose other-thread CPU (``process_time`` minus the caller's
  ``time.thread_time``) jumped by >= 2 ms, against mean wall / tick (``CONFIG_HZ``);
- ``busy``: cores kept busy by the process's threads (true CPU over elapsed time);
- ``calib``: median ms of a register-only numba loop (200 000 multiply-adds, one thread) timed
  after each block: the core's own speed;
- ``delay``: run-queue delay ms per call (schedstat's wait time, all threads): time runnable
  but waiting for a core, i.e. competition from other processes;
- ``faults``: minor page faults per call (mean) and the share of calls that fault;
- ``w-sleeps``: voluntary context switches per call of the busiest other thread (torch's
  OpenMP worker: 0 means it spins and never sleeps).

A process is ``slow`` when its bench cpu exceeds 1.5x its wall (the benchmark's slow-mode
signature). ``--history bench`` first runs what ``bench_sma.py`` runs before the numba row
(the 256 MiB copy, the reference loop, the torch path), ``none`` skips it. ``--env KEY=VALUE``
sets a variable in the children (e.g. ``OMP_WAIT_POLICY=passive``).

Usage::

    python benchmarks/sma_modes.py [--procs 8] [--threads 2] [--history bench|none]
        [--blocks 5] [--calls 40] [--env KEY=VALUE ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

__all__ = ["main"]


def _tick_s() -> float:
    """The scheduler tick in seconds (``CONFIG_HZ`` of the running kernel; 250 Hz if unknown)."""
    release = os.uname().release
    for path in (f"/boot/config-{release}",):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return 1.0 / int(line.split("=")[1])
        except OSError:
            pass
    return 1.0 / 250


def _tasks() -> dict[int, tuple[int, int, int]]:
    """Per thread id: (run ns, run-queue wait ns, voluntary context switches)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait, _ = map(int, f.read().split())
            with open(f"/proc/self/task/{tid}/status") as f:
                vcs = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt"))
        except (OSError, StopIteration):
            continue
        out[int(tid)] = (run, wait, vcs)
    return out


def _register_loop() -> Any:
    """A numba loop on registers only (no memory traffic): the core's own speed, timed next to
    each block (steady when the host gives the vCPU its full speed)."""
    from numba import njit

    @njit(cache=False)
    def spin(n: int) -> float:
        a = 1.0
        for _ in range(n):
            a = a * 0.999999 + 1e-9
        return a

    return spin


def _child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(ROOT))
    import bench_sma as bs

    torch.set_num_threads(args.threads)
    if args.history == "bench":
        bs._copy_gib_s(5)
    runs = bs._recurrence_runs(bs.FULL)
    if args.history == "bench":
        bs._fwd_and_fwd_bwd(runs["reference"], 3)
        bs._fwd_and_fwd_bwd(runs["torch"], 21)
    run = runs["numba"]
    for _ in range(10):
        run(True)
    spin = _register_loop()
    spin(10)
    main_tid = threading.get_native_id()
    tick = _tick_s()
    blocks: list[dict[str, float]] = []

    def one_block() -> None:
        wall: list[float] = []
        bench_cpu: list[float] = []
        other: list[float] = []
        faults: list[int] = []
        before = _tasks()
        start = time.perf_counter()
        for _ in range(args.calls):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            p0, m0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            run(True)
            t1, m1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            wall.append(t1 - t0)
            bench_cpu.append(p1 - p0)
            other.append((p1 - p0) - (m1 - m0))
        elapsed = time.perf_counter() - start
        after = _tasks()
        calib = []
        for _ in range(10):
            c0 = time.perf_counter()
            spin(200_000)
            calib.append(time.perf_counter() - c0)
        n = args.calls
        common = [t for t in after if t in before]
        run_ns = sum(after[t][0] - before[t][0] for t in common)
        wait_ns = sum(after[t][1] - before[t][1] for t in common)
        others = [t for t in common if t != main_tid]
        busiest = max(others, key=lambda t: after[t][0] - before[t][0], default=None)
        blocks.append(
            dict(
                wall_ms=statistics.median(wall) * 1e3,
                wall_min_ms=min(wall) * 1e3,
                bench_cpu_ms=statistics.median(bench_cpu) * 1e3,
                true_cpu_ms=run_ns / n / 1e6,
                delay_ms=wait_ns / n / 1e6,
                busy=run_ns / 1e9 / elapsed,
                calib_ms=statistics.median(calib) * 1e3,
                tick_share=sum(o >= tick / 2 for o in other) / n,
                tick_expect=statistics.fmean(wall) / tick,
                faults=statistics.fmean(faults),
                fault_share=sum(f > 0 for f in faults) / n,
                worker_sleeps=(
                    (after[busiest][2] - before[busiest][2]) / n if busiest is not None else 0.0
                ),
            )
        )

    if args.serve:  # one block per line read from stdin, its result as one line
        print("ready", flush=True)
        while sys.stdin.readline():
            one_block()
            print(json.dumps(blocks[-1]), flush=True)
    else:
        for _ in range(args.blocks):
            one_block()
    return dict(blocks=blocks, load=os.getloadavg()[0], threads=args.threads)


def _summary(res: dict[str, Any]) -> dict[str, float]:
    blocks = res["blocks"]

    def med(key: str) -> float:
        return statistics.median(b[key] for b in blocks)

    keys = (
        "wall_ms",
        "bench_cpu_ms",
        "true_cpu_ms",
        "delay_ms",
        "busy",
        "calib_ms",
        "tick_share",
        "tick_expect",
        "faults",
        "fault_share",
        "worker_sleeps",
    )
    s = {k: med(k) for k in keys}
    s["wall_lo"] = min(b["wall_ms"] for b in blocks)
    s["wall_hi"] = max(b["wall_ms"] for b in blocks)
    return s


def _interleave(args: argparse.Namespace, cmd: list[str], env: dict[str, str]) -> int:
    """K live processes take turns: one block each per round (the others wait on a pipe), so
    a process effect shows as a column that stays slow while the machine state is shared."""
    k = args.interleave
    procs = [
        subprocess.Popen(
            [*cmd, "--serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(k)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("child did not start")
        walls: list[list[float]] = [[] for _ in range(k)]
        print(
            f"SMA recurrence fwd+bwd, {k} live processes taking turns, threads={args.threads}, "
            f"history={args.history}, {args.rounds} rounds of {args.calls} calls; "
            f"median wall ms per block (rows: rounds; columns: processes)"
        )
        for r in range(args.rounds):
            for j in range(k):
                i = (j + r) % k  # rotate who goes first
                p = procs[i]
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write("\n")
                p.stdin.flush()
                walls[i].append(json.loads(p.stdout.readline())["wall_ms"])
            print(
                f"round {r:>2}: "
                + " ".join(f"{walls[i][-1]:>6.2f}" for i in range(k))
                + f"   load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        meds = [statistics.median(w) for w in walls]
        print("median  : " + " ".join(f"{m:>6.2f}" for m in meds))
        # within-round rank of each process: a process property keeps its rank
        ranks = [[0] * k for _ in range(k)]
        for r in range(args.rounds):
            order = sorted(range(k), key=lambda i: walls[i][r])
            for pos, i in enumerate(order):
                ranks[i][pos] += 1
        print("ranks   : " + "  ".join(f"p{i}:{ranks[i]}" for i in range(k)))
        if args.json:
            args.json.write_text(json.dumps(dict(walls=walls), indent=1))
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--history", choices=("bench", "none"), default="bench")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--interleave", type=int, default=0, metavar="K")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    env = dict(os.environ)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--env expects KEY=VALUE; found {item!r}")
        env[key] = value
    cmd = [sys.executable, __file__, "--child", "--threads", str(args.threads)]
    cmd += ["--history", args.history, "--blocks", str(args.blocks), "--calls", str(args.calls)]
    if args.interleave:
        return _interleave(args, cmd, env)
    print(
        f"SMA recurrence fwd+bwd, {args.procs} fresh processes, threads={args.threads}, "
        f"history={args.history}, {args.blocks} blocks x {args.calls} calls, tick "
        f"{_tick_s() * 1e3:.0f} ms, env {' '.join(args.env) or '-'}"
    )
    print(
        f"{'proc':>4} {'mode':>5} {'wall ms':>8} {'(blocks)':>13} {'bench cpu':>10}"
        f" {'true cpu':>9} {'busy':>5} {'calib':>6} {'other@tick':>11} {'delay':>6} {'faults':>7} {'(share)':>7}"
        f" {'w-sleeps':>9} {'load':>5}"
    )
    rows = []
    for i in range(args.procs):
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        s = _summary(res)
        slow = s["wall_ms"] > _tick_s() * 1e3 / 2
        rows.append(dict(proc=i, slow=slow, load=res["load"], **s))
        print(
            f"{i:>4} {'slow' if slow else 'fast':>5} {s['wall_ms']:>8.2f}"
            f" {s['wall_lo']:>6.2f}-{s['wall_hi']:<6.2f} {s['bench_cpu_ms']:>10.2f}"
            f" {s['true_cpu_ms']:>9.2f} {s['busy']:>5.2f} {s['calib_ms']:>6.3f} {s['tick_share']:>5.2f}/{s['tick_expect']:<5.2f}"
            f" {s['delay_ms']:>6.2f} {s['faults']:>7.0f} {s['fault_share']:>7.2f}"
            f" {s['worker_sleeps']:>9.2f} {res['load']:>5.1f}",
            flush=True,
        )
    slow_rows = [r for r in rows if r["slow"]]
    fast_rows = [r for r in rows if not r["slow"]]
    for name, group in (("fast", fast_rows), ("slow", slow_rows)):
        if group:
            walls = [r["wall_ms"] for r in group]
            print(
                f"{name}: {len(group)} processes, wall {min(walls):.2f}-{max(walls):.2f} ms, "
                f"cores busy {statistics.fmean(r['busy'] for r in group):.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
