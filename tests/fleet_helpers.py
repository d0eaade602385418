"""What the fleet tier's tests share: workers as processes, and looking at what tasks left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]


class Worker:
    """One ``hardexec worker`` process and what it is known by."""

    def __init__(self, name: str, process: subprocess.Popen, log: Path, start: int = 0) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.start = start  # where this worker's part of the log begins

    def logged(self) -> bytes:
        """What this worker wrote to its log (not an earlier worker of the same name)."""
        return self.log.read_bytes()[self.start :]

    def directory(self) -> Path | None:
        """Its cgroup directory (named by its main process's pid)."""
        from hardexec import cgroups

        root = cgroups.v2_mount()
        for parent, dirs, _ in os.walk(root):
            for d in dirs:
                if d.startswith(f"hardexec-worker-{self.process.pid}-"):
                    return Path(parent, d)
        return None

    def keeper(self) -> int | None:
        """Its keeper's pid (a child of its main process, until the main process dies)."""
        out = subprocess.run(
            ["pgrep", "-f", f"hardexec.treeguard {self.process.pid} "],
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(out[0]) if out else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def start_worker(
    broker, ceiling_file, fleet_dir, name, *, concurrency=4, queue=None, extra=(), env=None
):
    log = fleet_dir / f"{name}.log"
    start = log.stat().st_size if log.exists() else 0  # a log of an earlier worker of the name
    args = [*HARDEXEC, "worker", "--broker", broker, "--ceiling", str(ceiling_file)]
    args += ["--concurrency", str(concurrency), "--name", f"{name}@fleet", "--loglevel", "info"]
    if queue:
        args += ["--queue", queue]
    with open(log, "ab") as out:  # the worker has its own copy
        process = subprocess.Popen(
            [*args, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
    worker = Worker(name, process, log, start)
    if not wait_until(
        lambda: b" ready." in log.read_bytes()[start:] or process.poll() is not None, 60
    ):
        worker.stop()
        raise RuntimeError(f"worker {name} did not start: {log.read_text()[-2000:]}")
    if process.poll() is not None:
        raise RuntimeError(f"worker {name} exited {process.returncode}: {log.read_text()[-2000:]}")
    return worker


def check_gone(worker: Worker, status: int | None = 0) -> None:
    """The worker ended cleanly: its status, no keeper, no cgroup directory."""
    if status is not None:
        assert worker.process.returncode == status, worker.log.read_text()[-3000:]
    assert wait_until(lambda: worker.keeper() is None, timeout=10), "the keeper outlived its worker"
    assert wait_until(lambda: worker.directory() is None, timeout=10), "directory left behind"


def pids_in(path: Path, count: int, timeout: float = 30) -> list[int]:
    """The first ``count`` pids a task wrote to ``path``, once it has."""
    assert wait_until(
        lambda: path.exists() and len(path.read_text().split()) >= count, timeout=timeout
    ), f"the task did not write {count} pids to {path}"
    return [int(p) for p in path.read_text().split()[:count]]


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def gone(pids) -> bool:
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X"):
                return False
    return True


def kill_all(pids) -> None:
    """End what a failed test left (only the pids its own tasks wrote)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
