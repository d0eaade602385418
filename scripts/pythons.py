"""The other CPythons 3.11+ on this machine, one per minor version, for ./run-tests.

Prints one line per interpreter to test besides the default one: ``<major.minor> <path>``; the
newest patch release of each minor version wins. Says on stderr why any candidate is left out.

Where it looks: pyenv's versions (``$PYENV_ROOT``, else ``~/.pyenv``), then ``python3.N`` on
PATH. ``HARDEXEC_PYTHONS`` (space-separated commands or paths) replaces the search; set and
empty, it means none.

Usage: python3 scripts/pythons.py DEFAULT_PYTHON
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

OLDEST = (3, 11)
NEWEST_MINOR_ON_PATH = 20  # python3.11 … python3.20 are looked up on PATH
PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3], sys.executable or '')"


def probe(python: str) -> tuple[str, tuple[int, int, int], str] | str:
    """(implementation, version, executable) of ``python``, or why it cannot be used."""
    try:
        out = subprocess.run(
            [python, "-I", "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        return f"cannot run it ({exc.strerror})"
    except subprocess.TimeoutExpired:
        return "it did not answer within 60 s"
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or ["no message"])[0]
        return f"it fails to start ({first.strip()})"
    name, major, minor, micro, *executable = out.stdout.split()
    return name, (int(major), int(minor), int(micro)), " ".join(executable) or python


def candidates() -> tuple[list[str], bool]:
    """Commands or paths to probe, and whether the user named them (HARDEXEC_PYTHONS)."""
    named = os.environ.get("HARDEXEC_PYTHONS")
    if named is not None:
        return named.split(), True
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "*", "bin", "python3")))
    for minor in range(OLDEST[1], NEWEST_MINOR_ON_PATH + 1):
        path = shutil.which(f"python3.{minor}")
        if path and "/shims/" not in path:  # pyenv's shims only reach the versions above
            found.append(path)
    return found, False


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    default = probe(argv[1])
    if isinstance(default, str):
        print(f"pythons: the default Python {argv[1]}: {default}", file=sys.stderr)
        return 1
    default_minor = default[1][:2]
    chosen: dict[tuple[int, int], tuple[tuple[int, int, int], str]] = {}
    listed, named = candidates()
    for python in listed:
        found = probe(python)
        if isinstance(found, str):
            print(f"pythons: skipping {python}: {found}", file=sys.stderr)
            continue
        name, version, executable = found
        minor = version[:2]
        text = ".".join(map(str, version))
        if name != "cpython":
            print(f"pythons: skipping {python}: {name} {text}, not CPython", file=sys.stderr)
        elif minor < OLDEST:
            if named:
                print(f"pythons: skipping {python}: {text} is older than 3.11", file=sys.stderr)
        elif minor == default_minor:
            if named:
                print(f"pythons: skipping {python}: the default run covers {text}", file=sys.stderr)
        elif minor not in chosen or chosen[minor][0] < version:
            chosen[minor] = (version, executable)
    for minor in sorted(chosen):
        print(f"{minor[0]}.{minor[1]} {chosen[minor][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
