"""Where no C compiler works, hardexec still installs and runs, through the Python twin."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import parse_status, run_text

ROOT = Path(__file__).resolve().parents[2]


def test_install_without_a_compiler_falls_back_to_the_twin(tmp_path):
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bin", source / "bin")  # the hardexec command
    shutil.copytree(
        ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("hardexec-stage", "__pycache__", "*.egg-info"),
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(source),
        ],
        env={**os.environ, "CC": "false"},  # every compile fails, as with no compiler at all
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("hardexec-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(site)
    assert "hardexec/stage/twin.py" in names
    assert not any(name.endswith("hardexec-stage") for name in names)
    # no compiled front either: the command is the shell front, which starts Python isolated
    command = (site / "hardexec-0.1.0.data" / "scripts" / "hardexec").read_bytes()
    assert command.startswith(b"#!/bin/sh\n") and b' -I "$main"' in command

    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HARDEXEC_STAGE", None)
    hx = [sys.executable, "-m", "hardexec", "run"]
    result = run_text(
        [
            *hx,
            "--drop-all-caps",
            "--keep-cap",
            "NET_BIND_SERVICE",
            "--no-new-privs",
            "--user",
            "nobody",
            "--",
            "cat",
            "/proc/self/status",
        ],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    status = parse_status(result.stdout)
    for line in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[line] == "0000000000000400"
    assert status["Uid"].split() == ["65534"] * 4

    which = run_text(
        [sys.executable, "-c", "import hardexec.stage as s; print(s.stage_command()[-1])"], env=env
    )
    assert which.stdout.strip() == str(site / "hardexec" / "stage" / "twin.py")
    native = run_text(
        [*hx, "--no-new-privs", "--", "true"], env={**env, "HARDEXEC_STAGE": "native"}
    )
    assert native.returncode == 125 and "native exec stage was not built" in native.stderr
