"""Functional probes: what the kept (or dropped) capabilities actually allow."""

import errno
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

import hardexec
from hardexec import Policy, SecurityConfig

PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a pyenv under /root


def free_privileged_port() -> int:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        unprivileged = int(f.read())
    for port in [80, *range(1000, 1024)]:
        if port >= unprivileged:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free privileged port below {unprivileged} to probe with")


def bind_result(policy: Policy) -> str:
    port = free_privileged_port()
    code = (
        "import socket\n"
        "s = socket.socket()\n"
        "try:\n"
        f"    s.bind(('127.0.0.1', {port})); print('bound')\n"
        "except OSError as e:\n"
        "    print('errno', e.errno)\n"
    )
    result = hardexec.run(
        [PYTHON, "-I", "-c", code], policy=policy, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_nobody_binds_a_privileged_port_only_with_net_bind_service(stage):
    keep = SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody")
    drop = SecurityConfig(drop_all_caps=True, user="nobody")
    assert bind_result(Policy(security=keep)) == "bound"
    assert bind_result(Policy(security=drop)) == f"errno {errno.EACCES}"


def test_root_cannot_bind_once_its_caps_are_dropped(stage):
    """No no_new_privs, uid 0: the case where solti-exec's drop is undone by execve."""
    assert bind_result(Policy(security=SecurityConfig(drop_all_caps=True))) == (
        f"errno {errno.EACCES}"
    )


@pytest.fixture
def root_file(tmp_path):
    path = tmp_path / "owned-by-root"
    path.write_text("x")
    return path


def test_chown_fails_without_chown_and_works_with_it(stage, root_file):
    no_chown = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["DAC_OVERRIDE"]))
    result = hardexec.run(
        ["chown", "65534", str(root_file)], policy=no_chown, capture_output=True, text=True
    )
    assert result.returncode != 0 and "Operation not permitted" in result.stderr
    assert root_file.stat().st_uid == 0

    with_chown = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["CHOWN"]))
    hardexec.run(["chown", "65534", str(root_file)], policy=with_chown, check=True)
    assert root_file.stat().st_uid == 65534


@pytest.fixture
def setuid_id():
    """A set-uid-root copy of id(1) that nobody can reach and run (pytest's tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="hardexec-test-"))
    try:
        os.chmod(directory, 0o755)
        path = directory / "id"
        shutil.copy("/usr/bin/id", path)
        os.chown(path, 0, 0)
        os.chmod(path, 0o4755)
        assert path.stat().st_mode & stat.S_ISUID
        yield path
    finally:
        shutil.rmtree(directory)


def euid_after_setuid_exec(path, **security) -> str:
    policy = Policy(security=SecurityConfig(user="nobody", **security))
    result = hardexec.run([str(path), "-u"], policy=policy, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_setuid_root_binary_does_not_gain_euid_0_under_no_new_privs(stage, setuid_id):
    assert euid_after_setuid_exec(setuid_id) == "0"  # the probe works: set-uid does elevate
    assert euid_after_setuid_exec(setuid_id, no_new_privs=True) == "65534"
    assert euid_after_setuid_exec(setuid_id, drop_all_caps=True, no_new_privs=True) == "65534"
