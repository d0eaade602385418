"""hardexec learn on real programs: what it records (threads and children included), the file
it writes, and that the file runs the same program and refuses a different one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from hardexec import Policy, cgroups
from hardexec.confine import Confinement, SyscallFilter
from hardexec.learn import learn
from hardexec.policyfile import PolicyFile, load, loads
from helpers import kill_if_alive, process_gone, run_text, wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]
# A real interpreter binary (not a pyenv shim, a shell script an allow-list would break).
PY = (
    "/usr/bin/python3"
    if os.access("/usr/bin/python3", os.X_OK)
    else os.path.realpath(sys.executable)
)
TIMEOUT = 120

# An inet socket bound on loopback, and a file written in a directory given as argv[1].
TOOL = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.close()
with open(sys.argv[1] + "/out.txt", "w") as f:
    f.write("written")
print("tool: ok", flush=True)
"""
# The same, then a fork: clone, which the tool's own run never made.
TOOL_FORKING = (
    TOOL
    + """
import os
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("tool: forked")
"""
)
# Only a unix socket pair, and the network interfaces it sees.
UNIX_ONLY = """
import socket
a, b = socket.socketpair()
a.send(b"x")
print("got", b.recv(1).decode())
with open("/proc/self/net/dev") as f:
    print("interfaces", sorted(line.split(":")[0].strip() for line in f.readlines()[2:]))
"""
# A thread makes one syscall (statfs), a forked child another (getpriority).
THREADS_AND_CHILD = """
import os, threading
t = threading.Thread(target=os.statvfs, args=("/",))
t.start()
t.join()
pid = os.fork()
if pid == 0:
    os.getpriority(os.PRIO_PROCESS, 0)
    os._exit(0)
os.waitpid(pid, 0)
print("done")
"""


# unshare(CLONE_NEWUSER) through the C library (os.unshare is Python 3.12's).
UNSHARE = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), ctypes.get_errno())
"""


def hx(*args: str, **kwargs):
    return run_text([*HARDEXEC, *args], timeout=TIMEOUT, **kwargs)


def names(got) -> set[str]:
    return {name for name, _ in got.syscalls}


def test_the_learned_policy_runs_the_same_program_and_refuses_a_different_one(stage, tmp_path):
    policy_path = tmp_path / "tool.toml"
    work = tmp_path / "work"
    work.mkdir()
    learning = hx("learn", "-o", str(policy_path), "--", PY, "-S", "-c", TOOL, str(work))
    assert learning.returncode == 0, learning.stderr
    assert learning.stdout == "tool: ok\n"  # the program's own output, passed through
    said = learning.stderr.splitlines()[-1]
    assert said.startswith("hardexec: learned ")
    assert said.endswith(f" syscalls, network: yes; wrote {policy_path}")
    assert (work / "out.txt").read_text() == "written"
    doc = load(policy_path)
    filt = doc.policy.confinement.syscalls
    assert {"socket", "bind", "openat", "write", "sendmsg"} <= set(filt.allow)
    assert "clone" not in filt.allow
    assert doc.policy.confinement.namespaces == ()  # an inet socket: the host's network
    assert list(filt.allow) == sorted(filt.allow)

    (work / "out.txt").unlink()
    same = hx("run", "--policy", str(policy_path), "--", PY, "-S", "-c", TOOL, str(work))
    assert (same.returncode, same.stdout) == (0, "tool: ok\n"), same.stderr
    assert "denied" not in same.stderr
    assert (work / "out.txt").read_text() == "written"

    other = hx("run", "--policy", str(policy_path), "--", PY, "-S", "-c", TOOL_FORKING, str(work))
    assert other.returncode == 1
    assert other.stdout == "tool: ok\n"
    assert "OSError: [Errno 38] Function not implemented" in other.stderr
    assert "hardexec: denied syscalls: clone (1)" in other.stderr.splitlines()


def test_the_file_is_the_documents_text_and_says_how_it_was_learned(tmp_path):
    policy_path = tmp_path / "tool.toml"
    got = hx("learn", "-o", str(policy_path), "--", PY, "-S", "-c", "print('hi')")
    assert got.returncode == 0, got.stderr
    text = policy_path.read_text()
    assert text.startswith("# Learned by hardexec learn on ")
    assert f"{os.uname().sysname} {os.uname().release}" in text.splitlines()[0]
    assert f"#   {PY} -S -c 'print('\"'\"'hi'\"'\"')'" in text.splitlines()
    assert "network: no" in text
    assert "not measured" in text  # this host offers no memory or pids controller
    assert loads(text) == load(policy_path)


def test_a_program_without_an_inet_socket_gets_the_net_namespace(stage, tmp_path):
    policy_path = tmp_path / "unix.json"
    learning = hx("learn", "-o", str(policy_path), "--", PY, "-S", "-c", UNIX_ONLY)
    assert learning.returncode == 0, learning.stderr
    assert learning.stderr.splitlines()[-1].endswith("network: no; wrote " + str(policy_path))
    doc = load(policy_path)
    assert "net" in doc.policy.confinement.namespaces
    assert "socketpair" in doc.policy.confinement.syscalls.allow
    under = hx("run", "--policy", str(policy_path), "--", PY, "-S", "-c", UNIX_ONLY)
    assert under.returncode == 0, under.stderr
    assert under.stdout == "got x\ninterfaces ['lo']\n"  # its own loopback, and nothing else


def test_addresses_given_to_bind_connect_and_sendto_are_read_from_the_program(stage, tmp_path):
    name = f"hx-learn-{uuid.uuid4().hex}"
    code = f"""
import socket
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\\0{name}")
server.listen()
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("\\0{name}")
path = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
path.bind({str(tmp_path / "dgram")!r})
path.sendto(b"x", {str(tmp_path / "dgram")!r})
inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
inet.sendto(b"x", ("127.0.0.1", 9))
"""
    got = learn([PY, "-S", "-c", code])
    assert got.returncode == 0
    assert dict(got.addresses) == {"unix-abstract": 2, "unix-path": 2, "inet-loopback": 1}
    assert got.network


def test_an_abstract_unix_address_alone_keeps_the_hosts_network(stage):
    code = f"import socket; socket.socket(socket.AF_UNIX).bind('\\0hx-learn-{uuid.uuid4().hex}')"
    got = learn([PY, "-S", "-c", code])
    assert got.returncode == 0
    assert dict(got.families) == {"AF_UNIX": 1}
    assert dict(got.addresses) == {"unix-abstract": 1}
    assert "net" not in got.policy_file().policy.confinement.namespaces


def test_threads_and_children_are_observed(stage):
    got = learn([PY, "-S", "-c", THREADS_AND_CHILD])
    assert got.returncode == 0
    assert {"statfs", "getpriority", "clone", "wait4"} <= names(got)
    assert got.policy_file().policy.confinement.syscalls.allow is not None
    counts = dict(got.syscalls)
    assert counts["exit_group"] >= 2  # the program and its child


def test_a_base_filter_is_learned_within_its_refusals_counted_and_kept(stage):
    base = Policy(confinement=Confinement(syscalls=SyscallFilter(default=True)))
    got = learn([PY, "-S", "-c", UNSHARE], base)
    assert got.returncode == 0
    assert dict(got.denied) == {"unshare": 1}  # refused with EPERM, as the base refuses it
    assert "unshare" not in names(got)
    filt = got.policy_file().policy.confinement.syscalls
    assert filt.default is True
    assert "unshare" not in filt.allow


def test_a_learned_policy_file_keeps_the_bases_run_settings(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('version = 1\n[run]\nenv_policy = "clear"\nenv = { MARK = "m1" }\n')
    out = tmp_path / "tool.toml"
    code = "import os; print(os.environ.get('MARK'), 'HOME' in os.environ)"
    got = hx("learn", "--policy", str(base), "-o", str(out), "--", PY, "-S", "-c", code)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "m1 False\n"  # the base's environment, while learning too
    doc = load(out)
    assert doc.run.env_policy == "clear"
    assert doc.run.env == (("MARK", "m1"),)


def test_a_failing_program_still_gets_its_file_with_a_warning(tmp_path):
    out = tmp_path / "tool.toml"
    got = hx("learn", "-o", str(out), "--", PY, "-S", "-c", "import sys; sys.exit(3)")
    assert got.returncode == 3
    lines = got.stderr.splitlines()
    assert lines[0] == (
        "hardexec: warning: the program exited with status 3: the policy holds only what this "
        "failed run did"
    )
    assert lines[-1].endswith(f"wrote {out}")
    assert isinstance(load(out), PolicyFile)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing-dir/tool.toml", "no directory"),
        ("tool.yaml", "the file name must end in .toml or .json"),
        ("dir.toml", "is a directory"),
    ],
)
def test_a_bad_output_refuses_before_the_program_runs_and_leaves_nothing(tmp_path, output, message):
    marker = tmp_path / "ran"
    if output == "dir.toml":
        (tmp_path / output).mkdir()
    before = sorted(tmp_path.iterdir())
    code = f"open({str(marker)!r}, 'w').close()"
    got = hx("learn", "-o", output, "--", PY, "-S", "-c", code, cwd=tmp_path)
    assert got.returncode == 125
    assert len(got.stderr.splitlines()) == 1, got.stderr
    assert got.stderr.startswith("hardexec: -o/--output: ")
    assert message in got.stderr
    assert not marker.exists()
    assert sorted(tmp_path.iterdir()) == before


def test_an_output_under_a_file_is_refused_before_the_program_runs(tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    (tmp_path / "file").write_text("")
    got = hx("learn", "-o", str(tmp_path / "file" / "tool.toml"), "--", PY, "-S", "-c", code)
    assert got.returncode == 125
    assert got.stderr.startswith("hardexec: -o/--output: ")
    assert "no directory" in got.stderr
    assert not marker.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_timeout_ends_the_program_and_still_writes_what_it_did(tmp_path):
    out = tmp_path / "tool.toml"
    code = "import time; print('started', flush=True); time.sleep(60)"
    got = hx("learn", "--timeout", "1s", "-o", str(out), "--", PY, "-S", "-c", code)
    assert got.returncode == 124
    assert got.stdout == "started\n"
    assert "hardexec: warning: the timeout ended the program" in got.stderr
    doc = load(out)
    assert doc.run.timeout == 1.0
    assert "# The program was ended by the timeout;" in out.read_text()


def test_sigterm_to_hardexec_reaches_the_program_and_the_file_is_written(tmp_path):
    out = tmp_path / "tool.toml"
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    learning = subprocess.Popen(
        [*HARDEXEC, "learn", "-o", str(out), "--", PY, "-S", "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert learning.stdout.readline() == "ready\n"
        learning.send_signal(signal.SIGTERM)
        stdout, stderr = learning.communicate(timeout=TIMEOUT)
    finally:
        if learning.poll() is None:
            learning.kill()
            learning.communicate()
    assert learning.returncode == 7, stderr  # its handler's exit: it got the SIGTERM
    assert stdout == ""
    assert "exited with status 7" in stderr
    assert stderr.splitlines()[-1].endswith(f"wrote {out}")
    assert "# The program exited with status 7;" in out.read_text()


def test_a_missing_program_writes_nothing(tmp_path):
    out = tmp_path / "tool.toml"
    got = hx("learn", "-o", str(out), "--", str(tmp_path / "nope"))
    assert got.returncode == 127
    assert got.stderr == f"hardexec: {tmp_path / 'nope'}: No such file or directory\n"
    assert list(tmp_path.iterdir()) == []


def test_learning_from_a_thread_of_a_busy_process_counts_each_run_apart(stage):
    # Two learns at once share the one seccomp hub; each must see only its own program.
    results = {}

    def one(key, code):
        results[key] = learn([PY, "-S", "-c", code])

    threads = [
        threading.Thread(target=one, args=("a", "import os; os.statvfs('/')")),
        threading.Thread(target=one, args=("b", "import os; os.getpriority(0, 0)")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "statfs" in names(results["a"]) and "getpriority" not in names(results["a"])
    assert "getpriority" in names(results["b"]) and "statfs" not in names(results["b"])


@pytest.mark.parametrize(
    "option",
    [["--json-result", "r.json"], ["--usage"], ["--keep-leftovers", "--cgroup"], ["--verify"]],
)
def test_run_options_learn_cannot_honour_are_refused_before_it_runs(tmp_path, option):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()"
    got = hx("learn", "-o", "tool.toml", *option, "--", PY, "-S", "-c", code, cwd=tmp_path)
    assert got.returncode == 125
    assert got.stderr.startswith(f"hardexec: {option[0]}: not for hardexec learn"), got.stderr
    assert len(got.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_what_hardexec_notes_about_the_learning_run_is_said(tmp_path):
    out = tmp_path / "tool.toml"
    got = hx(
        "learn", "--user", "nobody", "--group", "nogroup", "--drop-all-caps", "-o", str(out),
        "--", PY, "-S", "-c", "import os; print(os.getuid())",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout == "65534\n"
    assert got.stderr.splitlines()[0] == (
        "hardexec: note: no_new_privs is implied: Landlock and seccomp need it when the program "
        "does not hold CAP_SYS_ADMIN"
    )
    assert load(out).policy.security.user == "nobody"


def test_the_program_cannot_choose_where_the_file_is_written(request):
    """It runs as nobody in a directory it owns, and swaps a directory on the output's path for
    a link to one of root's: the file still lands where the path led when learn started."""
    top = Path(tempfile.mkdtemp(dir="/tmp"))  # nobody must reach it: not pytest's 0700 dirs
    request.addfinalizer(lambda: shutil.rmtree(top))
    top.chmod(0o755)
    public = top / "pub"
    (public / "out").mkdir(parents=True)
    victim = top / "victim"
    victim.mkdir()
    (victim / "p.toml").write_text("ORIGINAL\n")
    for path in (public, public / "out"):
        os.chown(path, 65534, 65534)
    swap = f"cd {public} && mv out out.old && ln -s {victim} out"
    got = hx(
        "learn", "-o", str(public / "out" / "p.toml"), "--user", "nobody", "--", "sh", "-c", swap
    )
    assert got.returncode == 0, got.stderr
    assert (victim / "p.toml").read_text() == "ORIGINAL\n"
    assert (public / "out.old" / "p.toml").read_text().startswith("# Learned by hardexec learn")


def test_kill_9_of_hardexec_ends_the_learning_program(tmp_path):
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [
            *HARDEXEC,
            "learn",
            "-o",
            str(tmp_path / "t.toml"),
            "--",
            "sh",
            "-c",
            f"echo $$ > {pidfile}; exec sleep 60",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 30)
        program = int(pidfile.read_text())
        proc.kill()
        proc.wait(timeout=30)
        assert wait_until(lambda: process_gone(program), 10), "the program outlived hardexec"
    finally:
        kill_if_alive([proc.pid])
        proc.wait(timeout=30)
        # Its group stays, empty, until a later hardexec sweeps it (a minute on: unit tier).
        for group in cgroups.default_parent().glob(f"hardexec-{proc.pid}-*"):
            assert (group / "cgroup.procs").read_text() == ""
            group.rmdir()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
