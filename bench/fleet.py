#!/usr/bin/env python3
"""The fleet on Celery: hardened tasks against plain ``subprocess.run`` through the same setup.

Run as root: ``.venv/bin/python bench/fleet.py`` (``--quick`` for a smaller run, the smoke
test's). It starts a Redis server of its own (a unix socket in a temporary directory) and two
Celery workers (separate processes, prefork pool, ``--concurrency 8`` each), made by
:func:`hardexec.celery.make_app` and :func:`hardexec.celery.install` with one more task
registered beside hardexec's: ``bench.plain``, which runs ``subprocess.run(["/bin/true"])`` and
returns its status. Same broker, same backend, same workers, same acks_late configuration:
only what runs the program differs. Figures, measured in one run:

* throughput: 1000 ``/bin/true`` tasks sent at once, then every result collected, for each
  kind: hardened (the worker's ceiling: user nobody, every capability dropped, no_new_privs,
  1024 open files; each task in a cgroup of the worker's directory, its result a full Result)
  and plain. Tasks per second from the first send to the last result; target hardened/plain
  >= 0.5. The kinds alternate round by round (which goes first swaps); each figure is the median.
* latency: one hardened task at a time, submit to Result, p50 and p99 over the rounds, beside
  a local ``Runner.run`` of the same task under the same policy (no queue at all).

Every result is checked (exit status 0, and for hardened tasks the capability set the program
held), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CEILING = """\
version = 1
[security]
drop_all_caps = true
no_new_privs = true
user = "nobody"
[rlimits]
max_open_files = 1024
"""
WORKERS = 2
CONCURRENCY = 8


def app_for(broker: str):
    """The app both sides use, with the plain task registered beside hardexec's."""
    from hardexec.celery import make_app

    app = make_app(broker, name="bench-fleet")

    @app.task(name="bench.plain")
    def plain() -> int:
        return subprocess.run(["/bin/true"], check=False).returncode

    return app


def worker_main(broker: str, ceiling: str, name: str) -> None:
    """``bench/fleet.py --worker``: one worker, until SIGTERM."""
    from hardexec import policyfile
    from hardexec.celery import install

    app = app_for(broker)
    settings = install(app, policyfile.load(ceiling), name=name)
    settings.start_guard()
    try:
        app.worker_main(
            [
                "worker",
                f"--concurrency={CONCURRENCY}",
                "--pool=prefork",
                "--loglevel=warning",
                f"--hostname={name}@bench",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        settings.stop_guard()


class Fleet:
    """Redis and the workers, started and stopped by the bench."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
        self.sock = self.dir / "redis.sock"
        self.broker = f"redis+socket://{self.sock}"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        redis = subprocess.Popen(
            [
                *("redis-server", "--port", "0", "--unixsocket", str(self.sock)),
                *("--unixsocketperm", "700", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.dir)),
            ],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        self.processes.append(redis)
        _wait(self.sock.exists, "redis-server")
        ceiling = self.dir / "worker.toml"
        ceiling.write_text(CEILING)
        for n in range(WORKERS):
            log = open(self.dir / f"w{n}.log", "wb")  # noqa: SIM115  (the child's copy stays)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", self.broker, str(ceiling), f"w{n}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            log.close()
        app = app_for(self.broker)
        _wait(lambda: len(app.control.ping(timeout=0.5) or ()) == WORKERS, "the workers")
        app.close()

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/fleet.py: {what} did not start")
        time.sleep(0.05)


def throughput(app, kind: str, count: int) -> float:
    """Tasks per second for ``count`` tasks of ``kind``, all sent, then all collected."""
    from hardexec.celery import submit
    from hardexec.runner import TaskSpec

    spec = TaskSpec.command(["/bin/true"])
    start = time.perf_counter()
    if kind == "hardened":
        handles = [submit(spec, app=app) for _ in range(count)]
        for handle in handles:
            result = handle.get(timeout=600)
            assert result.exit_code == 0, result
    else:
        sent = [app.send_task("bench.plain") for _ in range(count)]
        for one in sent:
            assert one.get(timeout=600) == 0
    return count / (time.perf_counter() - start)


def latencies(app, rounds: int) -> list[float]:
    from hardexec.celery import submit
    from hardexec.runner import TaskSpec

    spec = TaskSpec.command(["sh", "-c", "grep CapEff /proc/self/status"])
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = submit(spec, app=app).get(timeout=60)
        seconds.append(time.perf_counter() - start)
        assert result.stdout == "CapEff:\t0000000000000000\n", result
    return seconds


def local_latencies(rounds: int) -> list[float]:
    import asyncio

    from hardexec import policyfile
    from hardexec.runner import Runner, TaskSpec

    policy = policyfile.loads(CEILING).policy
    spec = TaskSpec.command(["sh", "-c", "grep CapEff /proc/self/status"])

    async def go() -> list[float]:
        runner = Runner(policy=policy)
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            result = await runner.run(spec)
            seconds.append(time.perf_counter() - start)
            assert result.stdout == "CapEff:\t0000000000000000\n", result
        return seconds

    return asyncio.run(go())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (the smoke test's)")
    parser.add_argument("--worker", nargs=3, metavar=("BROKER", "CEILING", "NAME"))
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet.py: run as root (the workers drop capabilities)")
    count, rounds, one_by_one = (100, 1, 20) if args.quick else (1000, 3, 200)
    fleet = Fleet()
    try:
        fleet.start()
        app = app_for(fleet.broker)
        throughput(app, "hardened", 50)  # warm-up: every pool process has run a task
        throughput(app, "plain", 50)
        rates: dict[str, list[float]] = {"hardened": [], "plain": []}
        for r in range(rounds):
            for kind in ("hardened", "plain") if r % 2 == 0 else ("plain", "hardened"):
                rates[kind].append(throughput(app, kind, count))
        fleet_lat = latencies(app, one_by_one)
        app.close()
    finally:
        fleet.stop()
    local_lat = local_latencies(one_by_one)

    hardened, plain = statistics.median(rates["hardened"]), statistics.median(rates["plain"])
    print(f"{count} /bin/true tasks, {WORKERS} workers x {CONCURRENCY}, median of {rounds}:")
    for kind in ("plain", "hardened"):
        shown = ", ".join(f"{x:.0f}" for x in rates[kind])
        print(f"  {kind:<9} {statistics.median(rates[kind]):7.0f} tasks/s   (rounds: {shown})")
    ratio = hardened / plain
    verdict = "ok" if ratio >= 0.5 else "BELOW TARGET"
    print(f"  hardened / plain throughput      {ratio:.2f}   (target >= 0.5: {verdict})")
    print(f"latency of one task, {one_by_one} in a row (submit to Result):")
    for name, values in (("fleet", fleet_lat), ("local Runner.run", local_lat)):
        p50, p99 = percentile(values, 0.5) * 1e3, percentile(values, 0.99) * 1e3
        print(f"  {name:<17} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    p50_ratio = percentile(fleet_lat, 0.5) / percentile(local_lat, 0.5)
    print(f"  fleet / local p50                {p50_ratio:.1f}")
    return 0 if ratio >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
