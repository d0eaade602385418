"""examples/fleet.sh runs as written (the README quotes it) and shows what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hardexec
from helpers import hardexec_groups

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.sh"


def test_the_fleet_example_runs_as_written():
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # its hardexec and python3: the code under test
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.defpath)])
    package_root = str(Path(hardexec.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    before = hardexec_groups()
    done = subprocess.run(
        ["sh", str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    # The ceiling as given; exit status 3 came back.
    assert out[:3] == ["CapEff:\t0000000000000400", "NoNewPrivs:\t1", "exit status 3"], out
    # Narrowed: nobody, nothing kept.
    assert out[3:5] == ["nobody", "CapEff:\t0000000000000000"], out
    # Widened: refused with the reason, the program never ran.
    assert out[5] == "refused (exit 125)"
    assert "security.keep_caps: SYS_ADMIN is not kept by this worker's ceiling" in done.stderr
    # From Python: the Result, its streams, its cgroup usage (the worker's group).
    assert out[6].startswith("'sh' exited with status 0 after ")
    assert out[7] == "stdout: 64 | stderr: to stderr | usage from cgroup"
    # The worker stopped at the end took its directory with it.
    assert hardexec_groups() == before
