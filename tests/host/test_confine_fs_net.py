"""Confinement on the host: Landlock paths and TCP ports, network and other namespaces, umask.

What the program itself meets: the files it can and cannot open, the ports it can bind and
connect to, the interfaces and host name it sees, its umask, its capability sets. Every spawn
runs against both exec stages (the ``stage`` fixture); the leak check applies to every test.

Network tests touch only 127.0.0.1 (the host's loopback, or the loopback of a namespace the
program was given), on ephemeral ports the test picked by binding port 0, with bounded timeouts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import hardexec
import hardexec.confine.landlock
from hardexec import (
    Capability,
    CapSet,
    Confinement,
    Policy,
    SecurityConfig,
    StageError,
    StageWarning,
)
from hardexec.confine import landlock
from helpers import parse_status, run_text

HARDEXEC = [sys.executable, "-m", "hardexec"]
# The CLI's two ways of running: replacing itself with the stage, or staying as the parent.
MODES = {"exec": [], "supervised": ["--timeout", "60s"]}
NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
TIMEOUT = 60  # seconds: an upper bound for any one spawn, never reached when things work
IMPLIED_NNP = "no_new_privs is implied"


def hx(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_text([*HARDEXEC, *args], timeout=TIMEOUT, **kwargs)


def run(argv, confinement: Confinement, **security) -> subprocess.CompletedProcess[str]:
    """``argv`` under ``confinement`` (and a SecurityConfig of ``security``), output captured."""
    policy = Policy(
        security=SecurityConfig(**security) if security else SecurityConfig(),
        confinement=confinement,
    )
    return hardexec.run(argv, policy=policy, capture_output=True, text=True, timeout=TIMEOUT)


def py(code: str, confinement: Confinement, **security) -> subprocess.CompletedProcess[str]:
    """Python ``code`` as the program (no path rules: Python's own library is not allowed)."""
    return run([sys.executable, "-c", code], confinement, **security)


@pytest.fixture
def public(tmp_path_factory):
    """A directory anyone may enter (0755), outside pytest's root-only tmp tree.

    It holds ``data/file`` ("hello\\n", 0644), ``data/other`` ("other\\n"), ``secret``
    ("secret\\n", outside ``data``), ``bin/tool`` (a 0755 ``#!/bin/sh`` script), ``rw/``.
    """
    where = Path(tempfile.mkdtemp(prefix="fsnet-", dir="/tmp"))
    try:
        os.chmod(where, 0o755)
        for sub in ("data", "bin", "rw"):
            (where / sub).mkdir(mode=0o755)
        files = {
            "data/file": "hello\n",
            "data/other": "other\n",
            "secret": "secret\n",
            "bin/tool": "#!/bin/sh\necho tool ran\n",
        }
        for name, text in files.items():
            (where / name).write_text(text)
            os.chmod(where / name, 0o644)
        os.chmod(where / "bin/tool", 0o755)
        yield where
    finally:
        shutil.rmtree(where)


def free_port() -> int:
    """A TCP port nobody on 127.0.0.1 uses right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def listening():
    """A TCP server on the host's 127.0.0.1, on an ephemeral port; yields the port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


CONNECT = """
import socket, sys
for port in map(int, sys.argv[1:]):
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
            print(port, "connected")
        except OSError as err:
            print(port, "errno", err.errno)
"""

BIND = """
import socket, sys
for port in map(int, sys.argv[1:]):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
            print(port, "bound")
        except OSError as err:
            print(port, "errno", err.errno)
"""

# Every interface the program sees, UP or DOWN (SIOCGIFFLAGS), then a byte sent through its own
# 127.0.0.1: proof that the loopback really carries traffic. Then a connect to the port in argv.
INTERFACES = """
import fcntl, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    for _, name in socket.if_nameindex():
        packed = fcntl.ioctl(s, 0x8913, struct.pack("16sH", name.encode(), 0))
        flags = struct.unpack("16sH", packed[:18])[1]
        print(name, "UP" if flags & 1 else "DOWN")
with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=5) as client:
        peer, _ = server.accept()
        with peer:
            client.sendall(b"x")
            print("echo", peer.recv(1).decode())
if len(sys.argv) > 1:
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", int(sys.argv[1])))
            print("host server connected")
        except OSError as err:
            print("host server errno", err.errno)
"""


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


# --- Landlock: files ---------------------------------------------------------------------------


def test_only_the_allowed_file_can_be_read(stage, public):
    result = run(
        ["cat", public / "data/file", public / "secret"],
        Confinement(fs=[(public / "data", "ro")]),
    )
    assert result.stdout == "hello\n"
    assert f"{public}/secret: Permission denied" in result.stderr
    assert result.returncode == 1


def test_writing_under_ro_fails_under_rw_works(stage, public):
    script = (
        f"echo changed >> {public}/data/file; echo append=$?; "
        f"echo new > {public}/data/new; echo create_ro=$?; "
        f"echo written > {public}/rw/new; echo create_rw=$?; "
        f"read line < {public}/rw/new; echo read=$line"
    )
    result = run(
        ["sh", "-c", script],
        Confinement(fs=[(public / "data", "ro"), (public / "rw", "rw")]),
    )
    assert lines(result) == ["append=2", "create_ro=2", "create_rw=0", "read=written"]
    assert result.stderr.count("Permission denied") == 2
    assert (public / "data/file").read_text() == "hello\n"
    assert not (public / "data/new").exists()
    assert (public / "rw/new").read_text() == "written\n"


def test_cat_runs_with_only_its_data_file_allowed(stage, public):
    """The program's own file, loader and libraries come without being named."""
    result = run(["cat", public / "data/file"], Confinement(fs=[(public / "data/file", "ro")]))
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")


def test_cat_as_nobody_with_only_its_data_file_allowed(stage, public):
    policy = Policy(
        security=SecurityConfig(user="nobody"),
        confinement=Confinement(fs=[(public / "data/file", "ro")]),
    )
    with hardexec.Popen(
        ["cat", public / "data/file", public / "data/other"],
        policy=policy,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=TIMEOUT)
    assert out == "hello\n"
    assert f"{public}/data/other: Permission denied" in err
    assert proc.returncode == 1
    assert any(IMPLIED_NNP in note for note in proc.stage_notes), proc.stage_notes


def test_cli_cat_as_nobody(stage, public):
    result = hx(
        "run",
        "--user",
        "nobody",
        "--fs-ro",
        str(public / "data"),
        "--",
        "cat",
        str(public / "data/file"),
    )
    assert (result.returncode, result.stdout) == (0, "hello\n")
    assert IMPLIED_NNP in result.stderr  # a note, since the policy did not say --no-new-privs


def test_without_dependencies_the_exec_itself_is_refused(stage, public):
    policy = Policy(confinement=Confinement(fs=[(public / "data", "ro")], fs_dependencies=False))
    with pytest.raises(PermissionError) as err:
        hardexec.run(["cat", public / "data/file"], policy=policy, capture_output=True)
    assert err.value.errno == 13
    assert "cat" in str(err.value.filename)


@pytest.mark.parametrize("mode", MODES)
def test_cli_no_fs_deps_is_126(stage, mode, public):
    result = hx(
        "run",
        *MODES[mode],
        "--no-fs-deps",
        "--fs-ro",
        str(public / "data"),
        "--",
        "cat",
        str(public / "data/file"),
    )
    assert result.returncode == 126
    assert result.stdout == ""
    assert result.stderr == "hardexec: cat: Permission denied\n"


def test_a_rule_on_a_missing_path_is_refused_before_the_program_runs(stage, public):
    missing = public / "no-such-dir"
    marker = public / "rw/ran"
    with pytest.raises(StageError) as err:
        run(["sh", "-c", f": > {marker}"], Confinement(fs=[(missing, "ro"), (public / "rw", "rw")]))
    assert err.value.step == "landlock_path"
    assert err.value.errno == 2
    assert str(missing) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "mode",
    [
        "exec",
        "supervised",
    ],
)
def test_cli_missing_path_is_125_naming_it(stage, mode, public):
    missing = public / "no-such-dir"
    marker = public / "rw/ran"
    result = hx(
        "run",
        *MODES[mode],
        "--fs-rw",
        str(public / "rw"),
        "--fs-ro",
        str(missing),
        "--",
        "sh",
        "-c",
        f": > {marker}",
    )
    assert result.returncode == 125
    assert not marker.exists()
    # Checked before anything runs, in the option's words (the stage would refuse it too).
    assert result.stderr == f"hardexec: --fs-ro: {str(missing)!r}: No such file or directory\n"


@pytest.mark.parametrize("access", ["ro", "rx", "rw", "rwx"])
def test_a_rule_on_a_file_allows_that_file_only(stage, public, access):
    """The stage masks the rights only a directory can have (make, remove, list, ...)."""
    result = run(
        ["cat", public / "data/file", public / "data/other"],
        Confinement(fs=[(public / "data/file", access)]),
    )
    assert lines(result) == ["hello"]
    assert f"{public}/data/other: Permission denied" in result.stderr


def test_a_rw_rule_on_a_file_lets_it_be_written_not_its_siblings_created(stage, public):
    result = run(
        [
            "sh",
            "-c",
            f"echo more >> {public}/data/file; echo append=$?; "
            f"echo > {public}/data/sibling; echo create=$?",
        ],
        Confinement(fs=[(public / "data/file", "rw")]),
    )
    assert lines(result) == ["append=0", "create=2"]
    assert (public / "data/file").read_text() == "hello\nmore\n"
    assert not (public / "data/sibling").exists()


@pytest.mark.parametrize(("access", "runs"), [("rx", True), ("ro", False)])
def test_a_program_in_a_script_dir_runs_under_rx_not_ro(stage, public, access, runs):
    """sh starts the tool: sh's dependencies are automatic, the tool's directory is the rule."""
    result = run(["sh", "-c", f"{public}/bin/tool"], Confinement(fs=[(public / "bin", access)]))
    if runs:
        assert (result.returncode, result.stdout) == (0, "tool ran\n")
    else:
        assert result.returncode == 126
        assert result.stdout == ""
        assert f"{public}/bin/tool: Permission denied" in result.stderr


def test_a_rule_on_a_symlink_to_a_directory_allows_its_target(stage, public):
    (public / "link").symlink_to(public / "data")
    result = run(
        ["cat", public / "link/file", public / "data/other", public / "secret"],
        Confinement(fs=[(public / "link", "ro")]),
    )
    assert lines(result) == ["hello", "other"]
    assert f"{public}/secret: Permission denied" in result.stderr


def test_a_rule_on_a_symlink_to_a_file_allows_that_file(stage, public):
    (public / "flink").symlink_to(public / "data/file")
    result = run(
        ["cat", public / "flink", public / "data/other"],
        Confinement(fs=[(public / "flink", "ro")]),
    )
    assert lines(result) == ["hello"]
    assert f"{public}/data/other: Permission denied" in result.stderr


def test_a_symlink_inside_allowed_data_does_not_reach_outside(stage, public):
    (public / "data/escape").symlink_to(public / "secret")
    (public / "alias").symlink_to(public / "data/file")  # outside the rules, to an allowed file
    result = run(
        ["cat", public / "alias", public / "data/escape"],
        Confinement(fs=[(public / "data", "ro")]),
    )
    assert lines(result) == ["hello"]
    assert f"{public}/data/escape: Permission denied" in result.stderr


@pytest.mark.parametrize("name", ["a:b", "with space", "new\nline", "x=1", "\udcff\udcfe"])
def test_rule_paths_with_odd_characters(stage, public, name):
    """The rule list travels as ``path=HEX:PATH`` entries: any byte but NUL must survive."""
    where = public / name
    where.mkdir()
    (where / "f").write_text("odd\n")
    result = run(["cat", where / "f", public / "secret"], Confinement(fs=[(where, "ro")]))
    assert lines(result) == ["odd"]
    assert "secret: Permission denied" in result.stderr


def test_a_rule_on_a_dangling_symlink_is_refused_naming_it(stage, public):
    (public / "dangling").symlink_to(public / "nowhere")
    with pytest.raises(StageError) as err:
        run(["true"], Confinement(fs=[(public / "dangling", "ro")]))
    assert (err.value.step, err.value.errno) == ("landlock_path", 2)
    assert f"{public}/dangling" in str(err.value)


def test_dependencies_of_the_executable_not_of_argv0(stage, public):
    policy = Policy(confinement=Confinement(fs=[(public / "data", "ro")]))
    result = hardexec.run(
        ["not-cat", public / "data/file"],
        executable="cat",
        policy=policy,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert (result.returncode, result.stdout) == (0, "hello\n")


def test_a_script_run_through_env_gets_its_interpreter(stage, public):
    """``#!/usr/bin/env sh``: env and the sh it finds on PATH are both dependencies."""
    (public / "bin/envtool").write_text(
        f"#!/usr/bin/env sh\nread line < {public}/data/file\necho $line\n"
    )
    os.chmod(public / "bin/envtool", 0o755)
    result = run([public / "bin/envtool"], Confinement(fs=[(public / "data", "ro")]))
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr


@pytest.mark.parametrize("entry", [".", ""])
def test_a_program_on_a_relative_path_entry_is_found_from_cwd(stage, public, entry):
    policy = Policy(confinement=Confinement(fs=[(public / "data", "ro")]))
    argv, kwargs = ["tool"], {"cwd": public / "bin", "env": {"PATH": entry}}
    assert subprocess.run(argv, capture_output=True, text=True, **kwargs).stdout == "tool ran\n"
    result = hardexec.run(
        argv, policy=policy, capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )
    assert (result.returncode, result.stdout) == (0, "tool ran\n")


@pytest.mark.parametrize(
    "mode",
    [
        "exec",
        "supervised",
    ],
)
def test_cli_program_on_a_relative_path_entry_with_cwd(stage, mode, public):
    result = hx(
        "run",
        *MODES[mode],
        "--cwd",
        str(public / "bin"),
        "--env",
        "PATH=.",
        "--fs-ro",
        str(public / "data"),
        "--",
        "tool",
        cwd="/",
    )
    assert (result.returncode, result.stdout) == (0, "tool ran\n"), result.stderr


# --- Landlock: TCP -----------------------------------------------------------------------------


def test_bind_only_on_the_allowed_port(stage):
    allowed, other = free_port(), free_port()
    result = run(
        [sys.executable, "-c", BIND, str(allowed), str(other)], Confinement(tcp_bind=[allowed])
    )
    assert lines(result) == [f"{allowed} bound", f"{other} errno 13"], result.stderr


def test_connect_only_to_the_allowed_port(stage):
    with listening() as allowed, listening() as other:
        result = run(
            [sys.executable, "-c", CONNECT, str(allowed), str(other)],
            Confinement(tcp_connect=[allowed]),
        )
    assert lines(result) == [f"{allowed} connected", f"{other} errno 13"], result.stderr


def test_a_bind_list_alone_refuses_every_connect(stage):
    with listening() as server:
        result = run(
            [sys.executable, "-c", CONNECT, str(server)], Confinement(tcp_bind=[free_port()])
        )
    assert lines(result) == [f"{server} errno 13"], result.stderr


def test_cli_tcp_bind_and_connect(stage):
    allowed, other = free_port(), free_port()
    result = hx(
        "run",
        "--tcp-bind",
        str(allowed),
        "--",
        sys.executable,
        "-c",
        BIND,
        str(allowed),
        str(other),
    )
    assert lines(result) == [f"{allowed} bound", f"{other} errno 13"], result.stderr
    with listening() as server, listening() as refused:
        result = hx(
            "run",
            "--tcp-connect",
            str(server),
            "--",
            sys.executable,
            "-c",
            CONNECT,
            str(server),
            str(refused),
        )
    assert lines(result) == [f"{server} connected", f"{refused} errno 13"], result.stderr


# --- network namespace -------------------------------------------------------------------------


def test_net_namespace_has_only_lo_up_and_not_the_hosts_loopback(stage):
    with listening() as host_server:
        result = run(
            [sys.executable, "-c", INTERFACES, str(host_server)],
            Confinement(namespaces=["net"]),
        )
    assert lines(result) == ["lo UP", "echo x", "host server errno 111"], result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_cli_net_none(stage, mode):
    with listening() as host_server:
        result = hx(
            "run",
            *MODES[mode],
            "--net",
            "none",
            "--",
            sys.executable,
            "-c",
            INTERFACES,
            str(host_server),
        )
    assert lines(result) == ["lo UP", "echo x", "host server errno 111"], result.stderr
    assert result.returncode == 0


NS_TCP = """
import socket, sys
allowed, other = int(sys.argv[1]), int(sys.argv[2])
with socket.socket() as server:
    server.bind(("127.0.0.1", allowed))
    server.listen(1)
    with socket.create_connection(("127.0.0.1", allowed), timeout=5):
        print("allowed connected")
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", other))
        except OSError as err:
            print("other errno", err.errno)
"""


def test_tcp_rules_apply_inside_the_net_namespace(stage):
    """Its own loopback, and still only the allowed port: EACCES, not ECONNREFUSED."""
    allowed, other = free_port(), free_port()
    result = py(
        NS_TCP.replace("sys.argv[1]", str(allowed)).replace("sys.argv[2]", str(other)),
        Confinement(namespaces=["net"], tcp_bind=[allowed], tcp_connect=[allowed]),
    )
    assert lines(result) == ["allowed connected", "other errno 13"], result.stderr


def test_net_namespace_as_nobody(stage):
    exe = nobody_python()[0]  # this test's own Python may not be one nobody can run
    result = run(
        [exe, "-c", "import os, socket\nprint(os.getuid(), [n for _, n in socket.if_nameindex()])"],
        Confinement(namespaces=["net"]),
        user="nobody",
    )
    assert lines(result) == [f"{NOBODY} ['lo']"], result.stderr


def nobody_python() -> tuple[str, dict[str, str]]:
    """An interpreter user nobody can run hardexec with (an exec of itself included: the Python
    stage is ``sys.executable``), and the environment that finds this checkout's hardexec."""
    site = os.path.dirname(os.path.dirname(hardexec.__file__))
    env = {**os.environ, "PYTHONPATH": site}
    probe = "import os, sys; os.execv(sys.executable, [sys.executable, '-c', 'import hardexec'])"
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3"]
    for exe in filter(None, candidates):
        if run_text([*AS_NOBODY, exe, "-c", probe], env=env, cwd="/").returncode == 0:
            return exe, env
    pytest.skip(f"no Python that user nobody can run hardexec from {site} with")


@pytest.mark.parametrize("mode", MODES)
def test_cli_as_nobody_makes_the_namespaces_in_a_user_namespace(stage, mode):
    exe, env = nobody_python()
    code = (
        "import os, socket\n"
        "print(os.getuid(), os.getgid())\n"
        "print(os.readlink('/proc/self/ns/user'))\n"
        "print(' '.join(open('/proc/self/uid_map').read().split()))\n"
        "print([name for _, name in socket.if_nameindex()])\n"
    )
    result = run_text(
        [
            *AS_NOBODY,
            exe,
            "-m",
            "hardexec",
            "run",
            *MODES[mode],
            "--net",
            "none",
            "--",
            exe,
            "-c",
            code,
        ],
        env=env,
        cwd="/",
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    uid, userns, uid_map, names = lines(result)
    assert uid == f"{NOBODY} {NOBODY}"
    assert userns != os.readlink("/proc/self/ns/user")  # a user namespace of its own
    assert uid_map == f"{NOBODY} {NOBODY} 1"  # its own uid, mapped to itself
    assert names == "['lo']"


def test_cli_as_nobody_with_pid_ipc_uts(stage):
    exe, env = nobody_python()
    code = (
        "import os, socket\n"
        "print(os.getuid(), os.getpid(), socket.gethostname())\n"
        "print(os.readlink('/proc/self/ns/ipc'))\n"
    )
    result = run_text(
        [
            *AS_NOBODY,
            exe,
            "-m",
            "hardexec",
            "run",
            "--pid-ns",
            "--ipc-ns",
            "--hostname",
            "nobodys-box",
            "--",
            exe,
            "-c",
            code,
        ],
        env=env,
        cwd="/",
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    ids, ipc = lines(result)
    assert ids == f"{NOBODY} 2 nobodys-box"
    assert ipc != os.readlink("/proc/self/ns/ipc")
    assert socket.gethostname() != "nobodys-box"


# --- uts, ipc, pid namespaces ------------------------------------------------------------------


def test_uts_namespace_gets_the_hostname_and_the_host_keeps_its_own(stage):
    before = socket.gethostname()
    result = run(
        ["sh", "-c", "hostname; uname -n"],
        Confinement(namespaces=["uts"], hostname="confined-box"),
    )
    assert lines(result) == ["confined-box", "confined-box"], result.stderr
    assert socket.gethostname() == before != "confined-box"


@pytest.mark.parametrize("mode", MODES)
def test_cli_hostname(stage, mode):
    before = socket.gethostname()
    result = hx("run", *MODES[mode], "--hostname", "cli-box", "--", "hostname")
    assert (result.returncode, result.stdout) == (0, "cli-box\n"), result.stderr
    assert socket.gethostname() == before


def test_uts_namespace_without_hostname_keeps_the_hosts_name(stage):
    result = run(["hostname"], Confinement(namespaces=["uts"]))
    assert result.stdout == socket.gethostname() + "\n"


def test_ipc_namespace_is_the_programs_own(stage):
    ours = os.readlink("/proc/self/ns/ipc")
    confined = run(["readlink", "/proc/self/ns/ipc"], Confinement(namespaces=["ipc"]))
    unconfined = run(["readlink", "/proc/self/ns/ipc"], Confinement(umask=0o022))
    assert confined.stdout.strip().startswith("ipc:[")
    assert confined.stdout.strip() != ours
    assert unconfined.stdout.strip() == ours  # the comparison itself is sound


def pid_namespace_members(ns: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                found.append(int(pid))
    return found


def test_pid_namespace_program_is_pid_2_and_its_tree_ends_with_it(stage):
    from helpers import wait_until

    result = run(
        ["sh", "-c", "echo $$; readlink /proc/self/ns/pid; setsid sleep 300 & echo started"],
        Confinement(namespaces=["pid"]),
    )
    pid, ns, started = lines(result)
    assert pid == "2"  # the namespace's init is 1, the program comes after it
    assert ns != os.readlink("/proc/self/ns/pid")
    assert started == "started"
    assert wait_until(lambda: not pid_namespace_members(ns), timeout=5), "the sleep survived"


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 7", 7), ("kill -KILL $$", -9), ("kill -TERM $$", -15)],
)
def test_pid_namespace_relay_passes_the_programs_status_on(stage, script, status):
    result = run(["sh", "-c", script], Confinement(namespaces=["pid"]))
    assert result.returncode == status


def test_pid_namespace_relay_forwards_terminate_to_the_program(stage):
    policy = Policy(confinement=Confinement(namespaces=["pid"]))
    script = "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done"
    with hardexec.Popen(
        ["sh", "-c", script], policy=policy, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout.readline() == "ready\n"
        proc.terminate()
        assert proc.stdout.read() == "got TERM\n"
        assert proc.wait(timeout=TIMEOUT) == 3


# --- umask -------------------------------------------------------------------------------------


def test_umask_is_the_programs_and_shapes_its_files(stage, tmp_path):
    made = tmp_path / "made"
    result = run(["sh", "-c", f"umask; : > {made}"], Confinement(umask=0o077))
    assert result.stdout == "0077\n"
    assert made.stat().st_mode & 0o7777 == 0o600


def test_cli_umask(stage, tmp_path):
    made = tmp_path / "made"
    result = hx("run", "--umask", "027", "--", "sh", "-c", f"umask; mkdir {made}")
    assert result.stdout == "0027\n"
    assert made.stat().st_mode & 0o7777 == 0o750


# --- the command line's own checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--umask", "8"], "--umask: '8' is not an octal mode 000..777"),
        (["--umask", "1777"], "--umask: '1777' is not an octal mode 000..777"),
        (["--hostname", "bad_name"], "--hostname: 'bad_name' is not a host name"),
        (["--net", "host"], "--net: 'host': only 'none'"),
        (["--tcp-bind", "70000"], "--tcp-bind: '70000' is not a TCP port (0..65535)"),
        (["--tcp-connect", "80,,81"], "--tcp-connect: '80,,81' has an empty item"),
        (["--fs-ro", ""], "--fs-ro: the path is empty"),
    ],
)
def test_cli_bad_confinement_values_are_125_naming_the_option(tmp_path, args, message):
    marker = tmp_path / "ran"
    result = hx("run", *args, "--", "sh", "-c", f"echo > {marker}")
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr.startswith(f"hardexec: {message}"), result.stderr
    assert result.stderr.count("\n") == 1
    assert not marker.exists()


# --- fail closed / best effort (the kernel's Landlock ABI made to look older) -----------------


@pytest.fixture
def landlock_abi(monkeypatch):
    """Make this process believe the kernel's Landlock ABI is the given one.

    ``landlock.abi()`` is what compile.py names in its messages, but ``compile_rules`` asks
    ``_kernel_abi()``; both read the cached ``_abi``, so that is what is replaced.
    """

    def set_abi(version: int) -> None:
        monkeypatch.setattr(landlock, "_abi", version)
        assert landlock.abi() == version

    return set_abi


BIND_ANY = "import socket, sys\nwith socket.socket() as s:\n    s.bind(('127.0.0.1', 0))\n"


def test_tcp_rules_without_landlock_network_refuse_the_run(stage, landlock_abi, public):
    landlock_abi(3)
    marker = public / "rw/ran"
    with pytest.raises(StageError) as err:
        run(["sh", "-c", f": > {marker}"], Confinement(tcp_bind=[free_port()]))
    assert err.value.step == "landlock"
    assert "TCP bind" in str(err.value)
    assert "Landlock ABI is 3" in str(err.value)
    assert not marker.exists()


def test_tcp_rules_best_effort_warn_and_run_unconfined(stage, landlock_abi):
    landlock_abi(3)
    policy = Policy(confinement=Confinement(tcp_bind=[free_port()], best_effort=True))
    code = BIND_ANY + "    print('bound', s.getsockname()[1] > 0)\n"
    with pytest.warns(StageWarning, match="TCP bind, TCP connect: not enforced") as record:
        result = hardexec.run(
            [sys.executable, "-c", code], policy=policy, capture_output=True, text=True
        )
    assert result.stdout == "bound True\n"  # any port: nothing restricts it
    assert [w.message.step for w in record] == ["landlock"]


def test_best_effort_warnings_kept_on_the_process_with_warn_false(stage, landlock_abi):
    landlock_abi(3)
    policy = Policy(confinement=Confinement(tcp_connect=[1], best_effort=True))
    with hardexec.Popen(["true"], policy=policy, warn=False) as proc:
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == 0
    assert len(proc.stage_warnings) == 1
    assert "TCP" in str(proc.stage_warnings[0])
    assert proc.stage_warnings[0].step == "landlock"


def test_path_rules_on_abi_4_refuse_naming_device_ioctl(stage, landlock_abi, public):
    landlock_abi(4)
    with pytest.raises(StageError, match="ioctl on devices"):
        run(["cat", public / "data/file"], Confinement(fs=[(public / "data", "ro")]))


def test_path_rules_on_abi_4_best_effort_still_confine_files(stage, landlock_abi, public):
    landlock_abi(4)
    policy = Policy(confinement=Confinement(fs=[(public / "data", "ro")], best_effort=True))
    with hardexec.Popen(
        ["cat", public / "data/file", public / "secret"],
        policy=policy,
        warn=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=TIMEOUT)
    assert out == "hello\n"
    assert f"{public}/secret: Permission denied" in err
    assert [w.step for w in proc.stage_warnings] == ["landlock"]
    assert "ioctl on devices" in str(proc.stage_warnings[0])


def test_no_landlock_refuses_and_best_effort_runs_unconfined(stage, landlock_abi, public):
    landlock_abi(0)
    with pytest.raises(StageError, match="no Landlock"):
        run(["cat", public / "secret"], Confinement(fs=[(public / "data", "ro")]))
    policy = Policy(confinement=Confinement(fs=[(public / "data", "ro")], best_effort=True))
    with hardexec.Popen(
        ["cat", public / "secret"], policy=policy, warn=False, stdout=subprocess.PIPE, text=True
    ) as proc:
        out = proc.communicate(timeout=TIMEOUT)[0]
    assert out == "secret\n"  # nothing was enforced, as the warning says
    assert "no Landlock" in str(proc.stage_warnings[0])


def test_cli_refusal_is_125_naming_tcp(stage, landlock_abi, capfd):
    from hardexec.cli import main

    landlock_abi(3)
    assert main(["run", *MODES["supervised"], "--tcp-bind", "1", "--", "true"]) == 125
    err = capfd.readouterr().err
    assert err.startswith("hardexec: landlock failed: [Errno 95]")
    assert "TCP bind" in err
    assert err.count("\n") == 1


def test_cli_refusal_names_the_best_effort_option(stage, landlock_abi, capfd):
    from hardexec.cli import main

    landlock_abi(3)
    assert main(["run", *MODES["supervised"], "--tcp-bind", "1", "--", "true"]) == 125
    err = capfd.readouterr().err
    assert "--best-effort" in err
    assert "best_effort=True" not in err


def test_cli_best_effort_warns_and_runs(stage, landlock_abi, capfd):
    from hardexec.cli import main

    landlock_abi(3)
    code = BIND_ANY + "    print('bound')\n"
    args = ["run", *MODES["supervised"], "--best-effort", "--tcp-bind", "1", "--"]
    assert main([*args, sys.executable, "-c", code]) == 0
    out, err = capfd.readouterr()
    assert out == "bound\n"
    assert err.startswith("hardexec: warning: landlock failed: [Errno 95]")
    assert "TCP bind" in err


# --- the capability golden matrix, with confinement added --------------------------------------

CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
KEPT = {"none": [], "net_bind": [Capability.NET_BIND_SERVICE]}
MATRIX_CONFINEMENT = {
    # Landlock: the stage implies no_new_privs, since the program does not hold CAP_SYS_ADMIN.
    "landlock": Confinement(fs=[("/proc", "ro")], namespaces=["net", "ipc", "uts"], umask=0o022),
    # Namespaces and umask alone imply nothing.
    "namespaces": Confinement(namespaces=["net", "ipc", "uts"], umask=0o022),
}


@pytest.mark.parametrize("confinement", list(MATRIX_CONFINEMENT))
@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
@pytest.mark.parametrize("user", [None, "nobody"], ids=["root", "nobody"])
@pytest.mark.parametrize("kept", list(KEPT))
def test_confined_program_holds_exactly_the_kept_caps(stage, kept, user, nnp, confinement):
    c = MATRIX_CONFINEMENT[confinement]
    policy = Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=KEPT[kept], no_new_privs=nnp, user=user
        ),
        confinement=c,
    )
    with hardexec.Popen(
        ["cat", "/proc/self/status"],
        policy=policy,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=TIMEOUT)
    assert (proc.returncode, err) == (0, "")
    status = parse_status(out)
    want = CapSet.from_caps(KEPT[kept]).to_hex()
    assert {line: status[line] for line in CAP_LINES} == dict.fromkeys(CAP_LINES, want)
    implied = c.landlock and not nnp
    assert status["NoNewPrivs"] == ("1" if nnp or implied else "0")
    assert any(IMPLIED_NNP in note for note in proc.stage_notes) == implied
    uid = str(NOBODY) if user else "0"
    assert status["Uid"].split() == [uid] * 4


@pytest.mark.skipif(
    hardexec.confine.landlock.abi() < 6, reason="Landlock scopes need ABI 6 (Linux 6.12)"
)
def test_landlock_scopes_abstract_sockets_and_signals_to_the_programs_domain(stage):
    """With any Landlock rule, an abstract unix socket or a process outside the program's
    domain (here: this test's) cannot be reached, while the program's own children can."""
    name = f"\0hardexec-scope-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen(1)
    code = (
        "import os, signal, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect('\\0' + sys.argv[1]); print('connected')\n"
        "except OSError as err:\n"
        "    print('abstract', err.errno)\n"
        "try:\n"
        "    os.kill(int(sys.argv[2]), 0); print('signalled')\n"
        "except OSError as err:\n"
        "    print('signal', err.errno)\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    signal.pause()\n"
        "os.kill(child, signal.SIGKILL); os.waitpid(child, 0); print('own child ok')\n"
    )
    try:
        argv = [sys.executable, "-c", code, name[1:], str(os.getpid())]
        confined = run(argv, Confinement(tcp_connect=[1]))
        free = run(argv, Confinement(umask=0o022))  # the control: no Landlock rule
    finally:
        server.close()
    assert confined.stdout.split("\n")[:3] == [
        f"abstract {errno.EPERM}",
        f"signal {errno.EPERM}",
        "own child ok",
    ], confined.stderr
    assert free.stdout.split("\n")[:3] == ["connected", "signalled", "own child ok"]


def test_a_namespace_refused_from_above_says_so_not_that_root_lacks_a_capability(stage):
    """Root holds CAP_SYS_ADMIN: an unshare the kernel refuses anyway (here a seccomp filter
    around hardexec, as a container's would be) is explained as coming from above."""
    inner = (
        "import hardexec\n"
        "from hardexec import Confinement, Policy\n"
        "try:\n"
        "    hardexec.run(['true'], policy=Policy(confinement=Confinement(namespaces=['net'])))\n"
        "except hardexec.StageError as err:\n"
        "    print(err.step, err.errno)\n"
        "    print(err)\n"
    )
    outer = Confinement(syscalls=hardexec.SyscallFilter(deny=["unshare"]))
    result = run([sys.executable, "-c", inner], outer)
    step, text = result.stdout.splitlines()
    assert step == f"unshare {errno.EPERM}", result.stderr
    assert "although the launcher holds CAP_SYS_ADMIN" in text
    assert "lacks" not in text
