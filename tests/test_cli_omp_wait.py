"""The console script makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user
chose a policy, and sets it before torch (whose OpenMP runtime reads it at load) is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PROBE = """
import os, sys
import speechattn.cli as cli
assert "torch" not in sys.modules, "importing speechattn.cli imported torch"
seen = {}
build = cli.build_parser
def probe():
    seen["policy"] = os.environ.get("OMP_WAIT_POLICY")
    seen["torch"] = "torch" in sys.modules
    return build()
cli.build_parser = probe
try:
    cli.main(["info"])
except SystemExit:
    pass
print(seen["policy"], seen["torch"])
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("active", "active")])
def test_wait_policy_set_before_torch_loads(given: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == f"{expected} False"
