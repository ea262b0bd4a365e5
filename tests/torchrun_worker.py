"""Run a test's worker script in two CPU processes under torchrun (gloo), as the recipes run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["run_two_processes"]

ROOT = Path(__file__).resolve().parents[1]


def run_two_processes(
    source: str, tmp_path: Path, *args: str, timeout: int = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to ``tmp_path/worker.py`` and run it with ``torchrun --standalone
    --nproc_per_node 2``; the worker gets ``tmp_path``, the repository root and ``args`` as its
    arguments, ``OMP_NUM_THREADS=1`` and the repository's ``src`` and root on ``PYTHONPATH``
    (``env``: more variables). Returns the finished process (output captured, not checked)."""
    worker = tmp_path / "worker.py"
    worker.write_text(source)
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), full_env.get("PYTHONPATH", "")]
    )
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(worker), str(tmp_path), str(ROOT), *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
