"""Fleet tier: a Redis server and Celery workers (``hardexec worker``), each a separate process
this tier starts and stops itself, on this machine only (Redis listens on a unix socket).

Needs root (the workers drop capabilities and make cgroups), ``redis-server`` (apt; ./run-tests
installs it) and the celery extra. Every worker's end is checked: it exits, its keeper exits,
its cgroup directory is gone.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fleet_helpers import check_gone, start_worker
from helpers import (
    IS_LINUX,
    IS_ROOT,
    children,
    hardexec_groups,
    hardexec_temp_files,
    wait_until,
)

CEILING = """\
version = 1

[security]
drop_all_caps = true
keep_caps = ["CHOWN", "NET_BIND_SERVICE"]
no_new_privs = true
user = "nobody"

[rlimits]
max_open_files = 512

[run]
env_policy = "clear"
env = { FLEET = "yes" }
timeout = 120
max_output = 4096
"""


def pytest_collection_modifyitems(config, items):
    why = None
    if not (IS_ROOT and IS_LINUX):
        why = "fleet tier needs root on Linux (workers drop capabilities, make cgroups)"
    elif shutil.which("redis-server") is None:
        why = "fleet tier needs redis-server (apt-get install redis-server; ./run-tests does)"
    for item in items:
        if "/tests/fleet/" in str(item.path) and why:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="module", autouse=True)
def _nothing_left():
    """After the module (its workers and Redis stopped): no child, cgroup or temp file left."""
    groups, temp = hardexec_groups(), hardexec_temp_files()
    yield
    assert wait_until(lambda: not children(), timeout=10), f"children left: {children()}"
    assert wait_until(lambda: hardexec_groups() <= groups, timeout=10), hardexec_groups() - groups
    assert hardexec_temp_files() <= temp, hardexec_temp_files() - temp


# Module scope, all of it: the Redis server and the workers are this process's children, which
# the host tier's leak check (run after this tier) would count as leaks if they lived on.
@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def broker(fleet_dir) -> str:
    """A Redis server of the tier's own on a unix socket; its URL (stopped at the end)."""
    import redis

    sock = fleet_dir / "redis.sock"
    log = open(fleet_dir / "redis.log", "wb")  # noqa: SIM115  (closed below)
    server = subprocess.Popen(
        [
            *("redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm"),
            *("700", "--save", "", "--appendonly", "no", "--dir", str(fleet_dir)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(unix_socket_path=str(sock))

        def up() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, FileNotFoundError):
                return False

        if not wait_until(up, timeout=15, step=0.05):
            raise RuntimeError(
                f"redis-server did not start: {(fleet_dir / 'redis.log').read_text()}"
            )
        client.close()
        yield f"redis+socket://{sock}"
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def ceiling_file(fleet_dir) -> Path:
    path = fleet_dir / "worker.toml"
    path.write_text(CEILING)
    path.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def workers(broker, ceiling_file, fleet_dir):
    """Two workers (4 pool processes each) on the default queue, stopped after the module."""
    started = []
    try:
        for name in ("w1", "w2"):
            started.append(start_worker(broker, ceiling_file, fleet_dir, name))
        yield started
    finally:
        for worker in started:
            worker.stop()
        for worker in started:
            check_gone(worker)


@pytest.fixture
def shared():
    """A directory the tasks (user nobody) may write their records in, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="fleet-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def app(broker):
    from hardexec.celery import make_app

    celery_app = make_app(broker, name="fleet-tests")
    yield celery_app
    celery_app.close()
