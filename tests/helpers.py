"""Helpers shared by the test tiers: leak probes and reading what a program received."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

IS_ROOT = os.geteuid() == 0
IS_LINUX = sys.platform.startswith("linux")


def open_fds() -> set[str]:
    """This process's open fds as 'fd -> target' (a memfd shows as '/memfd:name (deleted)')."""
    return {
        f"{fd} -> {_target(fd)}" for fd in os.listdir("/proc/self/fd") if _target(fd) is not None
    }


def _target(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the fd of the listing itself, already closed
        return None


def processes() -> list[tuple[int, str, str, int]]:
    """Every process now, as (pid, '(comm)', state, ppid), from /proc/PID/stat."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        comm_end = stat.rindex(")")
        state, ppid = stat[comm_end + 2 :].split()[:2]
        found.append((int(pid), stat[stat.index("(") : comm_end + 1], state, int(ppid)))
    return found


def children() -> list[str]:
    """Processes whose parent is this test process (running or zombie), as 'pid (comm) state'."""
    me = os.getpid()
    return [f"{pid} {comm} {state}" for pid, comm, state, ppid in processes() if ppid == me]


_STATUS_LINE = re.compile(r"^(\w+):[ \t]*(.*)$", re.M)  # \s* would eat an empty line


def parse_status(text: str) -> dict[str, str]:
    """``/proc/<pid>/status`` text → {field: value}."""
    return {key: value.strip() for key, value in _STATUS_LINE.findall(text)}


def hardexec_temp_files() -> set[str]:
    """Files and folders named hardexec-* in the temp dir (and /dev/shm, where shm lives)."""
    found = set()
    for where in {tempfile.gettempdir(), "/dev/shm"}:
        try:
            found |= {str(path) for path in Path(where).glob("hardexec-*")}
        except OSError:  # no such folder here
            continue
    return found


def run_text(argv, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


def hardexec_groups(*, others: bool = False) -> set[str]:
    """Every hardexec-made cgroup directory under the cgroup v2 mount (none when not mounted).

    Groups made by another running process (another test run on this machine, say: see
    :func:`made_by_another_process`) are left out, unless ``others``.
    """
    from hardexec import cgroups

    try:
        root = cgroups.v2_mount()
    except OSError:
        return set()
    # os.walk, not Path.rglob: a group removed during the walk (by its program's end, by
    # another test run) is skipped rather than raising FileNotFoundError.
    found = {
        os.path.join(parent, name)
        for parent, dirs, _ in os.walk(root)
        for name in dirs
        if name.startswith("hardexec-")
    }
    return found if others else {group for group in found if not made_by_another_process(group)}


def made_by_another_process(group: str) -> bool:
    """True when a hardexec-<pid>-… group was made by a running process that is neither this
    one nor one of its descendants: another test run on this machine, not a leak of ours.

    A group whose maker has exited is counted as ours (a hardexec command a test started, say).
    A fleet worker's directory (``hardexec-worker-<pid>-…``) and every group in it are judged by
    the worker's pid: its pool processes come and go, the worker stays.
    """
    worker = re.search(r"/hardexec-worker-([0-9]+)-", group + "/")
    try:
        maker = int(worker[1]) if worker else int(os.path.basename(group).split("-")[1])
    except (IndexError, ValueError):
        return False
    pid = maker
    while pid > 1:
        if pid == os.getpid():
            return False
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # exited: it may have been ours
            return pid != maker
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return True


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children first), from /proc."""
    parents = {child: ppid for child, _, _, ppid in processes()}
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited: no such process, or a zombie (dead, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def kill_if_alive(pids) -> None:
    """Clean-up of processes a test started (by pid) that the code under test did not end."""
    for pid in pids:
        if pid and not process_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until(predicate, timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s pass; its last value."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(step)
    return True


# --- running an example as a reader would ---------------------------------------------------

EXAMPLE_HANG_GUARD = 120  # seconds: only so that a hung example fails instead of stalling


def _command_dir(tmp_path: Path) -> Path:
    """Where the ``hardexec`` command of this interpreter is; a ``-m hardexec`` shim if none."""
    bindir = Path(sys.executable).parent
    if os.access(bindir / "hardexec", os.X_OK):
        return bindir
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "hardexec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hardexec "$@"\n')
    shim.chmod(0o755)
    return shim_dir


def _environment(tmp_path: Path) -> dict[str, str]:
    import hardexec

    env = dict(os.environ)
    dirs = dict.fromkeys([str(_command_dir(tmp_path)), str(Path(sys.executable).parent)])
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", os.defpath)])
    package_root = str(Path(hardexec.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.pop("HARDEXEC_STAGE", None)  # the stage a reader gets: native when built
    return env


def run_example(path: Path, tmp_path: Path, own_network: bool = False):
    """Run the example at ``path`` to its end as a reader would (``sh FILE``, a Python one with
    this interpreter), with this interpreter's ``hardexec`` first on PATH and the package under
    test first on PYTHONPATH; stdout and stderr as text."""
    import pytest

    name = path.name
    argv = [sys.executable, str(path)] if path.suffix == ".py" else ["sh", str(path)]
    if own_network:
        # A network namespace of its own, loopback up: port 80 is free whatever else runs here.
        argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.Popen(
        argv,
        cwd=work,
        env=_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one process group to end if it hangs
    )
    try:
        out, err = proc.communicate(timeout=EXAMPLE_HANG_GUARD)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"{name} did not finish within {EXAMPLE_HANG_GUARD} s\nstdout: {out}\nstderr: {err}"
        )
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
