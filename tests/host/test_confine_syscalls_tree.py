"""Confinement on this machine: the seccomp filter and its report of denied syscalls, the pid
namespace (its relay, its init, the whole tree ending with the program), umask, securebits
locked for a program left as uid 0, and no_new_privs implied where seccomp needs it.

Every spawning test runs against the native and the Python stage (the ``stage`` fixture), and
every test is leak-checked (fds, the seccomp listener's socket included, children, cgroups, temp
files) by tests/host/conftest.py. Processes inside a pid namespace report namespace pids, so the
tree is followed on the host by a unique marker in the processes' argv (:func:`marked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

import hardexec
import hardexec.confine.compile as confine_compile
from hardexec import (
    Capability,
    Confinement,
    Policy,
    PolicyError,
    SecurityConfig,
    StageError,
    StageWarning,
    SyscallFilter,
)
from hardexec.confine import notify
from hardexec.runner import Runner, TaskSpec
from helpers import (
    children,
    descendants,
    kill_if_alive,
    open_fds,
    parse_status,
    processes,
    run_text,
    wait_until,
)

HARDEXEC = [sys.executable, "-m", "hardexec"]
# A real interpreter binary (not a pyenv shim, a shell script an allow-list would break).
PY = (
    "/usr/bin/python3"
    if os.access("/usr/bin/python3", os.X_OK)
    else os.path.realpath(sys.executable)
)
TIMEOUT = 60

DEFAULT = SyscallFilter(default=True)
# Enough for python3 -S to start, read and write files and run processes; no @network.
ALLOW = ["@basic-io", "@file-system", "@process", "@signal", "@io-event"]
# With sendmsg allowed, the stage can hand the counting listener over (see below).
COUNTED = [*ALLOW, "sendmsg"]
NOTE_UNCOUNTED = (
    "denied syscalls are refused in the kernel but not counted: the filter refuses sendmsg, "
    "with which the listener that counts them would be handed over"
)
NOTE_NNP = (
    "no_new_privs is implied: Landlock and seccomp need it when the program does not hold "
    "CAP_SYS_ADMIN"
)
UNSHARE_REFUSED = "unshare: unshare failed: Operation not permitted\n"

# ptrace(PTRACE_TRACEME) N times: prints each result and errno.
PTRACE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
    print(libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
"""
# i386's getpid (20) through int 0x80 from a 64-bit process.
INT80 = """
import ctypes, mmap
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20; int 0x80; ret
getpid32 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("ready", flush=True)
print("survived", getpid32() > 0, flush=True)
"""
# x32's getpid: x86_64's number 39 with the x32 bit (0x40000000).
X32 = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print("ready", flush=True)
libc.syscall(ctypes.c_long(0x40000000 | 39))
print("survived", flush=True)
"""
# clone(CLONE_NEWUSER | SIGCHLD) with no new stack: a fork (the child exits at once).
CLONE_NEWUSER = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
flags = 0x10000000 | signal.SIGCHLD
pid = libc.syscall(ctypes.c_long(56), ctypes.c_ulong(flags), *[ctypes.c_ulong(0)] * 4)
if pid == 0:
    os._exit(0)
err = ctypes.get_errno()
if pid > 0:
    os.waitpid(pid, 0)
print("cloned" if pid > 0 else "refused", err)
"""


def py(code: str, *args: str) -> list[str]:
    return [PY, "-S", "-c", code, *args]


def filtered(syscalls: SyscallFilter, **fields) -> Policy:
    security = fields.pop("security", None)
    kwargs = {"security": security} if security is not None else {}
    return Policy(confinement=Confinement(syscalls=syscalls, **fields), **kwargs)


def run(argv, policy, **kwargs) -> hardexec.CompletedProcess:
    return hardexec.run(
        argv, policy=policy, capture_output=True, text=True, timeout=TIMEOUT, **kwargs
    )


def hx(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return run_text([*HARDEXEC, *args], timeout=TIMEOUT, **kwargs)


def run_task(spec: TaskSpec, **runner_args):
    return asyncio.run(Runner(**runner_args).run(spec))


def new_marker() -> str:
    return f"hx-mark-{uuid.uuid4().hex}"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def marked(marker: str) -> list[int]:
    """Living processes with ``marker`` in their argv (a zombie's argv reads empty)."""
    want = marker.encode()
    return [pid for pid, _, state, _ in processes() if state != "Z" and want in _cmdline(pid)]


def denied_line(stderr: str) -> str | None:
    lines = [line for line in stderr.splitlines() if line.startswith("hardexec: denied syscalls:")]
    assert len(lines) <= 1, stderr
    return lines[0] if lines else None


def ids_of(policy) -> tuple[int, int]:
    result = run(py("import os; print(os.getpid(), os.getppid())"), policy)
    assert result.returncode == 0, result.stderr
    pid, ppid = map(int, result.stdout.split())
    return pid, ppid


# --- seccomp: the default deny-list ----------------------------------------------------------


def test_default_refuses_unshare_with_eperm_and_names_it(stage):
    result = run(["unshare", "-U", "true"], filtered(DEFAULT))
    assert result.returncode == 1
    assert result.stderr == UNSHARE_REFUSED  # unshare's own message: EPERM
    assert result.denied_syscalls == {"unshare": 1}
    assert result.stage_warnings == ()


def test_default_refuses_ptrace_and_popen_counts_every_call(stage):
    with hardexec.Popen(
        py(PTRACE, "3"), policy=filtered(DEFAULT), stdout=subprocess.PIPE, text=True
    ) as proc:
        out = proc.communicate(timeout=TIMEOUT)[0]
    assert proc.returncode == 0
    assert out == f"-1 {errno.EPERM}\n" * 3
    assert proc.denied_syscalls == {"ptrace": 3}


def test_counts_are_exact_across_threads(stage):
    code = (
        "import ctypes, threading\n"
        "libc = ctypes.CDLL(None)\n"
        "def work():\n"
        "    for _ in range(50):\n"
        "        libc.ptrace(0, 0, 0, 0)\n"
        "threads = [threading.Thread(target=work) for _ in range(4)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print('done')\n"
    )
    result = run([PY, "-c", code], filtered(DEFAULT))
    assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr
    assert result.denied_syscalls == {"ptrace": 200}


def test_runner_result_reports_the_denied_syscalls(stage):
    script = f'unshare -U true; {PY} -S -c "$1" 2'
    result = run_task(
        TaskSpec.command(["sh", "-c", script, "sh", PTRACE]), policy=filtered(DEFAULT)
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"-1 {errno.EPERM}\n" * 2
    assert result.stderr == UNSHARE_REFUSED
    assert dict(result.denied_syscalls) == {"unshare": 1, "ptrace": 2}
    assert result.to_dict()["denied_syscalls"] == {"unshare": 1, "ptrace": 2}


def test_asyncio_process_reports_denied_syscalls_and_notes(stage):
    policy = filtered(DEFAULT, security=SecurityConfig(user="nobody"))

    async def main():
        proc = await hardexec.create_subprocess_exec(
            "unshare", "-U", "true", policy=policy, stderr=subprocess.PIPE
        )
        _, err = await proc.communicate()
        return proc, err

    proc, err = asyncio.run(main())
    assert (proc.returncode, err) == (1, UNSHARE_REFUSED.encode())
    assert proc.denied_syscalls == {"unshare": 1}
    assert proc.stage_notes == (NOTE_NNP,)


def test_cli_default_names_the_denied_syscalls_on_stderr(stage):
    result = hx("run", "--syscalls", "default", "--", "unshare", "-U", "true")
    assert result.returncode == 1
    assert result.stderr == UNSHARE_REFUSED + "hardexec: denied syscalls: unshare (1)\n"


def test_cli_lists_several_syscalls_sorted_with_counts(stage):
    script = f'unshare -U true 2>/dev/null; {PY} -S -c "$1" 2'
    result = hx("run", "--syscalls", "default", "--", "sh", "-c", script, "sh", PTRACE)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "hardexec: denied syscalls: ptrace (2), unshare (1)\n"


def test_cli_json_result_holds_the_denied_syscalls(stage, tmp_path):
    out = tmp_path / "result.json"
    result = hx("run", "--syscalls", "default", "--json-result", str(out), "--", *py(PTRACE, "2"))
    assert result.returncode == 0, result.stderr
    assert "hardexec: denied syscalls: ptrace (2)" in result.stderr
    data = json.loads(out.read_text())
    assert data["denied_syscalls"] == {"ptrace": 2}
    assert data["exit_code"] == 0


def test_true_under_default_has_an_empty_report(stage, tmp_path):
    policy = filtered(DEFAULT)
    result = run(["true"], policy)
    assert (result.returncode, result.stderr, result.denied_syscalls) == (0, "", {})
    with hardexec.Popen(["true"], policy=policy) as proc:
        assert proc.wait(timeout=TIMEOUT) == 0
    assert proc.denied_syscalls == {}
    out = tmp_path / "result.json"
    cli = hx("run", "--syscalls", "default", "--json-result", str(out), "--", "true")
    assert (cli.returncode, cli.stderr) == (0, "")  # no "denied syscalls" line at all
    assert json.loads(out.read_text())["denied_syscalls"] == {}


def test_clone_with_clone_newuser_is_refused_while_fork_works(stage):
    unfiltered = run(py(CLONE_NEWUSER), Policy(confinement=Confinement(umask=0o022)))
    assert unfiltered.stdout == "cloned 0\n", unfiltered.stderr  # the control: root may
    result = run(py(CLONE_NEWUSER), filtered(DEFAULT))
    assert result.stdout == f"refused {errno.EPERM}\n", result.stderr
    assert result.denied_syscalls == {"clone": 1}
    forks = run(["sh", "-c", "true & wait $!; echo forked $?"], filtered(DEFAULT))
    assert (forks.returncode, forks.stdout, forks.stderr) == (0, "forked 0\n", "")
    assert forks.denied_syscalls == {}


def test_a_program_starting_programs_and_threads_is_not_refused(stage):
    code = (
        "import subprocess, threading\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "print(subprocess.run(['true']).returncode)\n"
    )
    result = run([PY, "-c", code], filtered(DEFAULT))
    assert (result.returncode, result.stdout, result.stderr) == (0, "thread\n0\n", "")
    assert result.denied_syscalls == {}  # clone3's ENOSYS fallback is not a refusal


# --- seccomp: allow-lists, actions, kill rules ---------------------------------------------


def test_allow_list_gives_enosys_for_an_unlisted_syscall(stage, tmp_path):
    data = tmp_path / "data"
    data.write_text("listed calls work\n")
    code = (
        "import socket, sys\n"
        "print(open(sys.argv[1]).read(), end='')\n"
        "try:\n"
        "    socket.socket()\n"
        "except OSError as err:\n"
        "    print('socket', err.errno)\n"
    )
    result = run(py(code, str(data)), filtered(SyscallFilter(allow=COUNTED)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"listed calls work\nsocket {errno.ENOSYS}\n"
    assert result.denied_syscalls.get("socket") == 1
    assert "openat" not in result.denied_syscalls and "read" not in result.denied_syscalls


def test_cli_allow_list_reports_the_unlisted_syscall(stage):
    code = "import socket\ntry:\n    socket.socket()\nexcept OSError as e:\n    print(e.errno)"
    result = hx("run", "--syscalls-allow", ",".join(COUNTED), "--", *py(code))
    assert (result.returncode, result.stdout) == (0, f"{errno.ENOSYS}\n"), result.stderr
    line = denied_line(result.stderr)
    assert line is not None and "socket (1)" in line, result.stderr


def test_an_explicit_deny_inside_an_allowed_group_wins_with_its_action(stage, tmp_path):
    code = (
        "import os, sys\n"
        "try:\n"
        "    os.mkdir(sys.argv[1])\n"
        "except OSError as err:\n"
        "    print('mkdir', err.errno)\n"
        "with open(sys.argv[2], 'w') as f:\n"
        "    f.write('x')\n"
        "print('created')\n"
    )
    folder, file = tmp_path / "folder", tmp_path / "file"
    policy = filtered(SyscallFilter(allow=COUNTED, deny=["mkdir:EACCES"]))
    result = run(py(code, str(folder), str(file)), policy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mkdir {errno.EACCES}\ncreated\n"
    assert not folder.exists() and file.read_text() == "x"
    assert result.denied_syscalls.get("mkdir") == 1


@pytest.mark.parametrize(
    ("syscalls", "namespaces"),
    [
        (SyscallFilter(deny=["mkdir:kill"]), ()),
        (SyscallFilter(allow=COUNTED, deny=["mkdir:kill"]), ()),
        (SyscallFilter(deny=["mkdir:kill"]), ("pid",)),
    ],
    ids=["deny-list", "allow-list", "in-a-pid-ns"],
)
def test_a_kill_rule_kills_the_program_and_is_reported(stage, tmp_path, syscalls, namespaces):
    folder = tmp_path / "never"
    code = "import os, sys\nprint('before', flush=True)\nos.mkdir(sys.argv[1])\nprint('after')"
    result = run(py(code, str(folder)), filtered(syscalls, namespaces=namespaces))
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "before\n"
    assert not folder.exists()
    assert result.denied_syscalls.get("mkdir") == 1


def test_cli_kill_rule_dies_of_sigkill_and_names_the_call(stage, tmp_path):
    folder = tmp_path / "never"
    code = "import os, sys\nos.mkdir(sys.argv[1])"
    result = hx("run", "--syscalls-deny", "mkdir:kill", "--", *py(code, str(folder)))
    assert result.returncode == -signal.SIGKILL
    assert result.stderr == "hardexec: denied syscalls: mkdir (1)\n"
    assert not folder.exists()


def test_a_denied_sendmsg_is_refused_on_every_fd(stage):
    """A socket put on every fd number in turn: each sendmsg is refused (EPERM)."""
    code = (
        "import os, resource, socket\n"
        "a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "top = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1024)\n"
        "tried = 0\n"
        "for fd in range(3, top):\n"
        "    if fd in (a.fileno(), b.fileno()):\n"
        "        continue\n"
        "    os.dup2(a.fileno(), fd)\n"
        "    s = socket.socket(fileno=fd)\n"
        "    tried += 1\n"
        "    try:\n"
        "        s.sendmsg([b'x'])\n"
        "        print('sent on fd', fd)\n"
        "        b.recv(1)\n"
        "    except OSError as err:\n"
        "        assert err.errno == 1, err\n"
        "    s.close()\n"
        "print('tried', tried)\n"
    )
    result = run(py(code), filtered(SyscallFilter(deny=["sendmsg"])))
    assert result.returncode == 0, result.stderr
    tried = int(result.stdout.splitlines()[-1].split()[1])
    assert tried > 900
    assert result.stdout == f"tried {tried}\n"  # no "sent on fd N" line
    # No exemption for handing a listener over, so nothing counts: and the run says so.
    assert result.denied_syscalls == {}
    assert NOTE_UNCOUNTED in result.stage_notes


def test_an_allow_list_without_sendmsg_refuses_but_does_not_count(stage):
    code = (
        "import socket\n"
        "try:\n"
        "    socket.socket()\n"
        "except OSError as err:\n"
        "    print('socket', err.errno)\n"
    )
    result = run(py(code), filtered(SyscallFilter(allow=ALLOW)))
    assert (result.returncode, result.stdout) == (0, f"socket {errno.ENOSYS}\n"), result.stderr
    assert result.denied_syscalls == {}
    assert NOTE_UNCOUNTED in result.stage_notes
    cli = hx("run", "--syscalls-allow", ",".join(ALLOW), "--", *py(code))
    assert cli.stdout == f"socket {errno.ENOSYS}\n"
    assert f"hardexec: note: {NOTE_UNCOUNTED}" in cli.stderr.splitlines()


def test_the_program_inherits_no_fd_of_the_listener(stage):
    code = "import os\nprint(*sorted(int(fd) for fd in os.listdir('/proc/self/fd')))"
    result = run(py(code), filtered(DEFAULT), close_fds=True)
    assert result.returncode == 0, result.stderr
    # 0, 1, 2 and the one the listing itself opened
    assert len(result.stdout.split()) == 4, result.stdout


# --- other ABIs --------------------------------------------------------------------------------

ANY_FILTER = pytest.mark.parametrize(
    "syscalls",
    [DEFAULT, SyscallFilter(deny=["ptrace"]), SyscallFilter(allow=[*ALLOW, "@memory"])],
    ids=["default", "deny-list", "allow-list"],
)


@ANY_FILTER
def test_int_0x80_from_a_64_bit_program_is_killed(stage, syscalls):
    result = run(py(INT80), filtered(syscalls))
    assert result.returncode == -signal.SIGSYS, result.stderr
    assert result.stdout == "ready\n"


def test_int_0x80_without_a_filter_survives(stage):
    """The control: the same program through the stage, with a confinement but no filter."""
    result = run(py(INT80), Policy(confinement=Confinement(umask=0o022)))
    assert (result.returncode, result.stdout) == (0, "ready\nsurvived True\n"), result.stderr


@ANY_FILTER
def test_an_x32_syscall_number_is_killed(stage, syscalls):
    result = run(py(X32), filtered(syscalls))
    assert result.returncode == -signal.SIGSYS, result.stderr
    assert result.stdout == "ready\n"


def test_an_x32_syscall_number_without_a_filter_survives(stage):
    result = run(py(X32), Policy(confinement=Confinement(umask=0o022)))
    assert (result.returncode, result.stdout) == (0, "ready\nsurvived\n"), result.stderr


def test_cli_int_0x80_death_is_hardexecs_own(stage):
    result = hx("run", "--syscalls", "default", "--", *py(INT80))
    assert result.returncode == -signal.SIGSYS
    assert result.stdout == "ready\n"


# --- identity and no_new_privs ------------------------------------------------------------

STATUS_AND_PTRACE = (
    "import ctypes\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith(('Uid', 'NoNewPrivs')):\n"
    "        print(line, end='')\n"
    "print(ctypes.CDLL(None, use_errno=True).ptrace(0, 0, 0, 0), ctypes.get_errno())\n"
)


def _status_lines(stdout: str) -> dict[str, str]:
    return parse_status("\n".join(stdout.splitlines()[:-1]))


def test_as_nobody_the_filter_works_and_no_new_privs_is_implied_with_a_note(stage):
    policy = filtered(DEFAULT, security=SecurityConfig(user="nobody"))
    with hardexec.Popen(
        py(STATUS_AND_PTRACE), policy=policy, stdout=subprocess.PIPE, text=True
    ) as p:
        out = p.communicate(timeout=TIMEOUT)[0]
    status = _status_lines(out)
    assert status["Uid"].split() == ["65534"] * 4
    assert status["NoNewPrivs"] == "1"
    assert out.splitlines()[-1] == f"-1 {errno.EPERM}"
    assert p.denied_syscalls == {"ptrace": 1}
    assert p.stage_notes == (NOTE_NNP,)


def test_cli_as_nobody_says_no_new_privs_is_implied(stage):
    result = hx("run", "--user", "nobody", "--syscalls", "default", "--", *py(STATUS_AND_PTRACE))
    assert result.returncode == 0, result.stderr
    assert _status_lines(result.stdout)["NoNewPrivs"] == "1"
    assert result.stderr.splitlines() == [
        f"hardexec: note: {NOTE_NNP}",
        "hardexec: denied syscalls: ptrace (1)",
    ]


@pytest.mark.parametrize(
    ("security", "implied"),
    [
        (None, False),  # root holds CAP_SYS_ADMIN
        (SecurityConfig(drop_all_caps=True), True),
        (SecurityConfig(drop_all_caps=True, keep_caps=[Capability.SYS_ADMIN]), False),
        (SecurityConfig(user="nobody", no_new_privs=True), False),  # asked: nothing to imply
    ],
    ids=["root", "root-dropped", "root-keeps-sys-admin", "nobody-asks-nnp"],
)
def test_no_new_privs_is_implied_only_when_the_program_lacks_cap_sys_admin(
    stage, security, implied
):
    policy = filtered(DEFAULT, security=security)
    with hardexec.Popen(
        py(STATUS_AND_PTRACE), policy=policy, stdout=subprocess.PIPE, text=True
    ) as p:
        out = p.communicate(timeout=TIMEOUT)[0]
    status = _status_lines(out)
    asked = security is not None and security.no_new_privs
    assert status["NoNewPrivs"] == ("1" if implied or asked else "0")
    assert p.stage_notes == ((NOTE_NNP,) if implied else ())
    assert out.splitlines()[-1] == f"-1 {errno.EPERM}"  # the filter applies either way
    assert p.denied_syscalls == {"ptrace": 1}


def test_cli_as_root_without_drop_gives_no_note(stage):
    result = hx("run", "--syscalls", "default", "--", "grep", "NoNewPrivs", "/proc/self/status")
    assert (result.returncode, result.stdout) == (0, "NoNewPrivs:\t0\n")
    assert result.stderr == ""


# --- umask ---------------------------------------------------------------------------------


def test_umask_reaches_the_program(stage, tmp_path):
    made = tmp_path / "made"
    policy = Policy(confinement=Confinement(umask=0o077))
    result = run(["sh", "-c", 'umask; touch "$1"', "sh", str(made)], policy)
    assert (result.returncode, result.stdout) == (0, "0077\n"), result.stderr
    assert made.stat().st_mode & 0o777 == 0o600
    cli = hx("run", "--umask", "027", "--", "sh", "-c", "umask")
    assert (cli.returncode, cli.stdout, cli.stderr) == (0, "0027\n", "")


# --- pid namespace -------------------------------------------------------------------------

PID_NS = Policy(confinement=Confinement(namespaces=["pid"]))
# A setsid'd daemon that ignores SIGTERM and marks its argv; it touches $1 once it is up.
DAEMON = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'w').close()\n"
    "time.sleep(300)\n"
)
# sh -c LEAVE_DAEMON sh PY DAEMON FLAG MARKER: start it, wait until it is up, exit 3.
LEAVE_DAEMON = (
    'setsid "$1" -S -c "$2" "$3" "$4" </dev/null >/dev/null 2>&1 &\n'
    'while [ ! -e "$3" ]; do sleep 0.01; done\n'
    "exit 3\n"
)


def leave_daemon(tmp_path, marker: str) -> list[str]:
    return ["sh", "-c", LEAVE_DAEMON, "sh", PY, DAEMON, str(tmp_path / "up"), marker]


def test_pid_ns_a_setsid_daemon_ignoring_sigterm_ends_with_the_program(stage, tmp_path):
    marker = new_marker()
    with hardexec.Popen(leave_daemon(tmp_path, marker), policy=PID_NS) as proc:
        assert proc.cgroup is None  # no cgroup: the namespace alone ends the tree
        status = proc.wait(timeout=TIMEOUT)
    try:
        assert status == 3  # the program's own, with its namespace ended
        assert (tmp_path / "up").exists()  # the daemon did start
        assert wait_until(lambda: not marked(marker)), f"left running: {marked(marker)}"
    finally:
        kill_if_alive(marked(marker))


def test_without_pid_ns_the_same_daemon_outlives_the_program(tmp_path):
    """The control: with no namespace and no cgroup, the daemon escapes."""
    marker = new_marker()
    result = hardexec.run(leave_daemon(tmp_path, marker), timeout=TIMEOUT)
    try:
        assert result.returncode == 3
        time.sleep(0.2)
        assert marked(marker), "the daemon did not outlive its program"
    finally:
        kill_if_alive(marked(marker))
        wait_until(lambda: not marked(marker))


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 7", 7), ("kill -SEGV $$", -signal.SIGSEGV), ("kill -KILL $$", -signal.SIGKILL)],
    ids=["exit-7", "sigsegv", "sigkill"],
)
def test_pid_ns_passes_the_exit_status_through(stage, script, status):
    result = run(["sh", "-c", script], PID_NS)
    assert result.returncode == status
    assert result.stderr == ""


@pytest.mark.parametrize("mode", [[], ["--syscalls", "default"]], ids=["exec", "supervised"])
@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 7", 7), ("kill -SEGV $$", -signal.SIGSEGV), ("kill -KILL $$", -signal.SIGKILL)],
    ids=["exit-7", "sigsegv", "sigkill"],
)
def test_cli_pid_ns_exit_status_is_the_programs(stage, mode, script, status):
    result = hx("run", "--pid-ns", *mode, "--", "sh", "-c", script)
    assert result.returncode == status  # killed by N: hardexec dies of N too
    assert result.stderr == ""


def test_pid_ns_program_is_pid_2_and_its_parent_is_0(stage):
    assert ids_of(PID_NS) == (2, 0)
    cli = hx("run", "--pid-ns", "--", *py("import os; print(os.getpid(), os.getppid())"))
    assert (cli.returncode, cli.stdout, cli.stderr) == (0, "2 0\n", "")


def test_pid_ns_with_a_filter_and_nobody(stage):
    policy = filtered(
        DEFAULT, namespaces=["pid"], security=SecurityConfig(user="nobody", drop_all_caps=True)
    )
    script = "echo $$; grep -E '^(Uid|NoNewPrivs)' /proc/self/status; unshare -U true"
    result = run(["sh", "-c", script], policy)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "2"
    assert parse_status("\n".join(lines[1:])) == {
        "Uid": "65534\t65534\t65534\t65534",
        "NoNewPrivs": "1",
    }
    assert result.stderr == UNSHARE_REFUSED
    assert result.denied_syscalls == {"unshare": 1}


# Handlers first, then "ready": each signal is printed; SIGTERM then exits 0.
CATCHER = """
import os, signal, sys
def got(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
    if signum == signal.SIGTERM:
        sys.exit(0)
signal.signal(signal.SIGUSR1, got)
signal.signal(signal.SIGTERM, got)
print("ready", os.getpid(), os.getppid(), flush=True)
while True:
    signal.pause()
"""


@pytest.mark.parametrize("mode", [[], ["--syscalls", "default"]], ids=["exec", "supervised"])
def test_cli_signals_sent_to_hardexec_reach_the_program_in_its_namespace(stage, mode):
    marker = new_marker()
    proc = subprocess.Popen(
        [*HARDEXEC, "run", "--pid-ns", *mode, "--", *py(CATCHER, marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready 2 0\n"
        program = marked(marker)
        if not mode:  # exec mode: hardexec's own pid became the stage, the relay
            assert [pid for pid in program if pid in descendants(proc.pid)], program
        proc.send_signal(signal.SIGUSR1)
        assert proc.stdout.readline() == "got SIGUSR1\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "got SIGTERM\n"
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        kill_if_alive(marked(marker))


def test_popen_signals_reach_the_program_through_the_relay(stage):
    marker = new_marker()
    with hardexec.Popen(
        py(CATCHER, marker), policy=PID_NS, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout.readline() == "ready 2 0\n"
            proc.send_signal(signal.SIGUSR1)
            assert proc.stdout.readline() == "got SIGUSR1\n"
            proc.terminate()
            assert proc.stdout.readline() == "got SIGTERM\n"
            assert proc.wait(timeout=TIMEOUT) == 0
        finally:
            proc.kill()
            proc.wait()


# A tree: the daemon (setsid'd, TERM ignored), a child ignoring TERM; then "ready", sleep.
TREE = (
    'setsid "$1" -S -c "$2" "$3" "$4" </dev/null >/dev/null 2>&1 &\n'
    'sh -c \'trap "" TERM; sleep 300; :\' "$4" </dev/null >/dev/null 2>&1 &\n'
    "trap '' TERM\n"
    'while [ ! -e "$3" ]; do sleep 0.01; done\n'
    "echo ready\n"
    "sleep 300\n"
)


def tree(tmp_path, marker: str) -> list[str]:
    return ["sh", "-c", TREE, "sh", PY, DAEMON, str(tmp_path / "up"), marker]


@pytest.mark.parametrize("how", ["popen", "cli"])
def test_kill_9_of_the_relay_ends_the_whole_namespace(stage, tmp_path, how):
    marker = new_marker()
    if how == "popen":
        proc = hardexec.Popen(
            tree(tmp_path, marker), policy=PID_NS, stdout=subprocess.PIPE, text=True
        )
    else:
        proc = subprocess.Popen(
            [*HARDEXEC, "run", "--pid-ns", "--", *tree(tmp_path, marker)],
            stdout=subprocess.PIPE,
            text=True,
        )
    try:
        assert proc.stdout.readline() == "ready\n"
        assert len(marked(marker)) >= 3  # the program, its child, the daemon (and the stage)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert wait_until(lambda: not marked(marker)), f"left running: {marked(marker)}"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        kill_if_alive(marked(marker))


def test_runner_timeout_with_pid_ns_ends_the_whole_tree(stage, tmp_path):
    marker = new_marker()
    spec = TaskSpec.command(tree(tmp_path, marker), timeout=2, kill_after=0.5)
    started = time.monotonic()
    try:
        result = run_task(spec, policy=PID_NS)
        elapsed = time.monotonic() - started
        assert result.stdout == "ready\n", result.stderr
        assert result.timed_out and result.outcome == "timeout"
        assert result.signal == signal.SIGKILL  # the program ignored SIGTERM
        assert wait_until(lambda: not marked(marker)), f"left running: {marked(marker)}"
        assert elapsed < 30  # the 300 s sleeps did not run out
    finally:
        kill_if_alive(marked(marker))


def test_cli_timeout_with_pid_ns_ends_the_whole_tree(stage, tmp_path):
    marker = new_marker()
    result = hx(
        "run", "--pid-ns", "--timeout", "1s", "--kill-after", "0.5s", "--", *tree(tmp_path, marker)
    )
    try:
        assert result.returncode == 124
        assert result.stdout == "ready\n"
        assert "hardexec: timed out after 1 s" in result.stderr
        assert wait_until(lambda: not marked(marker)), f"left running: {marked(marker)}"
    finally:
        kill_if_alive(marked(marker))


# A launcher that spawns the tree with die_with_parent in a pid namespace, then waits.
LAUNCHER = """
import sys, hardexec
from hardexec import Confinement, Policy
policy = Policy(die_with_parent=True, confinement=Confinement(namespaces=["pid"]))
hardexec.Popen(sys.argv[1:], policy=policy).wait()
"""


def test_kill_9_of_the_launcher_ends_the_namespace_with_die_with_parent(stage, tmp_path):
    marker = new_marker()
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *tree(tmp_path, marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout.readline() == "ready\n"
        launcher.kill()
        assert launcher.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert wait_until(lambda: not marked(marker)), f"left running: {marked(marker)}"
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
        kill_if_alive(marked(marker))


# --- securebits ----------------------------------------------------------------------------

CAPSH = shutil.which("capsh") or "/usr/sbin/capsh"
needs_capsh = pytest.mark.skipif(not os.access(CAPSH, os.X_OK), reason="capsh is not installed")
# PR_GET_SECUREBITS (27), then PR_SET_SECUREBITS (28) to 0: result and errno, bits again.
SECUREBITS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
before = libc.prctl(27, 0, 0, 0, 0)
cleared = libc.prctl(28, 0, 0, 0, 0)
print(before, cleared, ctypes.get_errno(), libc.prctl(27, 0, 0, 0, 0))
"""
SECBIT_NOROOT_LOCKED_SET = 0b1011  # NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP_LOCKED


@needs_capsh
def test_uid_0_after_drop_all_caps_reads_locked_noroot(stage):
    policy = Policy(security=SecurityConfig(drop_all_caps=True))
    result = run([CAPSH, "--print"], policy)
    assert result.returncode == 0, result.stderr
    assert "secure-noroot: yes (locked)" in result.stdout
    assert "secure-no-suid-fixup: no (locked)" in result.stdout
    cli = hx("run", "--drop-all-caps", "--", CAPSH, "--print")
    assert "secure-noroot: yes (locked)" in cli.stdout, cli.stderr


@pytest.mark.parametrize("keep", [[], [Capability.SETPCAP]], ids=["none", "setpcap"])
def test_the_program_cannot_clear_its_securebits(stage, keep):
    policy = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=keep))
    result = run(py(SECUREBITS), policy)
    assert result.returncode == 0, result.stderr
    bits = SECBIT_NOROOT_LOCKED_SET
    assert result.stdout == f"{bits} -1 {errno.EPERM} {bits}\n"  # locked, even with SETPCAP


@needs_capsh
@pytest.mark.parametrize(
    "security",
    [SecurityConfig(user="nobody", drop_all_caps=True), SecurityConfig(no_new_privs=True)],
    ids=["nobody-dropped", "root-not-dropped"],
)
def test_securebits_are_not_set_otherwise(stage, security):
    result = run([CAPSH, "--print"], Policy(security=security))
    assert result.returncode == 0, result.stderr
    assert "secure-noroot: no (unlocked)" in result.stdout
    assert "secure-no-suid-fixup: no (unlocked)" in result.stdout
    bits = run(py(SECUREBITS), Policy(security=security))
    assert bits.stdout.split()[0] == "0"


# --- failing closed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"deny": ["ptrac"]}, "syscalls.deny[0]: unknown syscall 'ptrac' (did you mean ptrace?)"),
        (
            {"allow": ["read", "@file-sytem"]},
            "syscalls.allow[1]: unknown group '@file-sytem' (did you mean @file-system?)",
        ),
        (
            {"deny": ["namespace"]},
            "syscalls.deny[0]: unknown syscall 'namespace' (did you mean @namespace?)",
        ),
        ({"deny": ["mkdir:EFOO"]}, "syscalls.deny[0]: unknown action 'EFOO' in 'mkdir:EFOO'"),
        ({"allow": ["mkdir:EPERM"]}, "syscalls.allow[0]: 'mkdir:EPERM': an action is for deny"),
        ({"deny": ["execve"]}, "syscalls.deny[0]: execve cannot be denied"),
        ({"deny": ["exit_group"]}, "syscalls.deny[0]: exit_group cannot be denied"),
        ({"allow": ["@default-deny"]}, "syscalls.allow[0]: @default-deny is a deny-list"),
        ({}, "syscalls: nothing to filter"),
    ],
    ids=[
        "typo",
        "group-typo",
        "group-without-at",
        "bad-action",
        "action-on-allow",
        "execve",
        "exit_group",
        "deny-only-group",
        "empty",
    ],
)
def test_a_filter_mistake_is_a_policy_error_naming_the_field(fields, message):
    with pytest.raises(PolicyError) as caught:
        SyscallFilter(**fields)
    assert str(caught.value).startswith(message), caught.value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--syscalls-deny", "ptrac"],
            "hardexec: --syscalls-deny: unknown syscall 'ptrac' (did you mean ptrace?)\n",
        ),
        (
            ["--syscalls-allow", "@file-sytem"],
            "hardexec: --syscalls-allow: unknown group '@file-sytem' "
            "(did you mean @file-system?)\n",
        ),
        (
            ["--syscalls-deny", "execve"],
            "hardexec: --syscalls-deny: execve cannot be denied: the stage execs the program "
            "after installing the filter\n",
        ),
        (
            ["--syscalls", "bogus"],
            "hardexec: --syscalls: 'bogus': the only list is 'default' (see --syscalls-deny)\n",
        ),
        (
            ["--syscalls-deny", "ptrace,"],
            "hardexec: --syscalls-deny: 'ptrace,' has an empty item\n",
        ),
        (["--umask", "088"], "hardexec: --umask: '088' is not an octal mode 000..777\n"),
    ],
    ids=["deny-typo", "allow-typo", "execve", "bogus-list", "empty-item", "umask"],
)
def test_cli_filter_mistakes_exit_125_naming_the_option(args, message, tmp_path):
    ran = tmp_path / "ran"
    result = hx("run", *args, "--", "touch", str(ran))
    assert result.returncode == 125
    assert result.stderr == message
    assert not ran.exists()


@pytest.fixture
def seccomp_actions(monkeypatch):
    """Make this process believe the kernel offers these seccomp actions (empty: none)."""
    real = confine_compile.seccomp_actions()

    def set_actions(actions) -> None:
        monkeypatch.setattr(confine_compile, "seccomp_actions", lambda: frozenset(actions))

    set_actions.real = real
    return set_actions


@pytest.fixture
def spawns(monkeypatch):
    """The argv of every process subprocess starts from now on."""
    started: list = []
    real = subprocess.Popen._execute_child

    def spy(self, args, *rest, **kwargs):
        started.append(args)
        return real(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", spy)
    return started


def test_a_kernel_without_seccomp_refuses_before_anything_is_spawned(
    stage, seccomp_actions, spawns, tmp_path
):
    seccomp_actions(())
    ran = tmp_path / "ran"
    with pytest.raises(StageError) as caught:
        hardexec.run(["touch", str(ran)], policy=filtered(DEFAULT))
    err = caught.value
    assert (err.step, err.errno) == ("seccomp", errno.EOPNOTSUPP)
    assert "the syscall filter" in str(err) and "cannot be enforced" in str(err)
    assert "this kernel has no seccomp" in str(err)
    assert spawns == [] and children() == [] and not ran.exists()


def test_a_kernel_without_seccomp_best_effort_warns_and_runs_unfiltered(stage, seccomp_actions):
    seccomp_actions(())
    policy = filtered(DEFAULT, best_effort=True)
    with pytest.warns(StageWarning, match="the syscall filter.*not enforced") as caught:
        result = run(["unshare", "-U", "true"], policy)
    assert "this kernel has no seccomp" in str(caught[0].message)
    assert (result.returncode, result.stderr) == (0, "")  # nothing filtered, as it says
    assert result.denied_syscalls == {}
    assert [w.step for w in result.stage_warnings] == ["seccomp"]


def test_without_seccomp_nothing_confines_so_no_new_privs_is_not_implied(stage, seccomp_actions):
    seccomp_actions(())
    policy = filtered(DEFAULT, best_effort=True, security=SecurityConfig(user="nobody"))
    with hardexec.Popen(
        ["grep", "NoNewPrivs", "/proc/self/status"],
        policy=policy,
        stdout=subprocess.PIPE,
        text=True,
        warn=False,
    ) as proc:
        out = proc.communicate(timeout=TIMEOUT)[0]
    assert out == "NoNewPrivs:\t0\n"
    assert proc.stage_notes == ()


def test_cli_without_seccomp_exits_125_and_best_effort_runs(stage, seccomp_actions, capfd):
    from hardexec.cli import main

    seccomp_actions(())
    assert main(["run", "--syscalls", "default", "--", "echo", "ran"]) == 125
    out, err = capfd.readouterr()
    assert out == ""
    assert err.startswith("hardexec: seccomp failed: [Errno 95]") and err.count("\n") == 1, err
    assert "this kernel has no seccomp" in err
    assert main(["run", "--best-effort", "--syscalls", "default", "--", "echo", "ran"]) == 0
    out, err = capfd.readouterr()
    assert out == "ran\n"
    assert err.startswith("hardexec: warning: seccomp failed: [Errno 95]"), err
    assert "the syscall filter" in err and "not enforced" in err


def test_cli_seccomp_refusal_names_the_best_effort_option(stage, seccomp_actions, capfd):
    from hardexec.cli import main

    seccomp_actions(())
    assert main(["run", "--syscalls", "default", "--", "true"]) == 125
    err = capfd.readouterr().err
    assert "--best-effort" in err and "best_effort=True" not in err


def test_without_user_notif_denials_are_refused_but_not_counted(stage, seccomp_actions):
    seccomp_actions(seccomp_actions.real - {"user_notif"})
    with pytest.warns(StageWarning, match="denied syscalls are refused but not counted"):
        result = run(["unshare", "-U", "true"], filtered(DEFAULT))
    assert (result.returncode, result.stderr) == (1, UNSHARE_REFUSED)
    assert result.denied_syscalls == {}
    with pytest.warns(StageWarning, match="refused but not counted"):
        killed = run(
            py("import os, sys\nos.mkdir(sys.argv[1])", "/nonexistent-x/never"),
            filtered(SyscallFilter(deny=["mkdir:kill"])),
        )
    assert killed.returncode == -signal.SIGSYS  # the kernel kills it: SECCOMP_RET_KILL_PROCESS
    assert killed.denied_syscalls == {}


# --- the listener leaves nothing behind ----------------------------------------------------


def test_the_listener_serves_a_daemon_after_the_program_and_then_closes(stage, tmp_path):
    go = tmp_path / "go"
    script = (
        '(while [ ! -e "$1" ]; do sleep 0.01; done; unshare -U true) '
        "</dev/null >/dev/null 2>&1 &\n"
        "exit 0\n"
    )
    before = open_fds()
    proc = hardexec.Popen(["sh", "-c", script, "sh", str(go)], policy=filtered(DEFAULT))
    assert proc.wait(timeout=TIMEOUT) == 0
    assert proc.denied_syscalls == {}  # the daemon has not tried yet
    go.touch()  # now it calls unshare, under the filter it inherited, and exits
    assert wait_until(lambda: open_fds() == before, timeout=15), open_fds() - before
    assert wait_until(lambda: notify.pending() == 0)
    assert proc.denied_syscalls == {"unshare": 1}  # counted after the program had gone


def test_a_missing_program_under_a_filter_raises_and_leaks_no_socket(stage):
    before = open_fds()
    with pytest.raises(FileNotFoundError) as caught:
        hardexec.Popen(["no-such-program-x"], policy=filtered(DEFAULT))
    assert caught.value.filename == "no-such-program-x"
    assert wait_until(lambda: open_fds() == before), open_fds() - before
    assert wait_until(lambda: notify.pending() == 0)
    cli = hx("run", "--syscalls", "default", "--", "no-such-program-x")
    assert cli.returncode == 127
    assert cli.stderr == "hardexec: no-such-program-x: No such file or directory\n"


def test_a_stage_abort_under_a_filter_leaks_no_socket(stage):
    with open("/proc/self/status") as f:
        held = int(parse_status(f.read())["CapPrm"], 16)
    if held >> Capability.SYS_RESOURCE & 1:
        pytest.skip("this launcher holds SYS_RESOURCE: keeping it does not fail")
    policy = filtered(
        DEFAULT,
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=[Capability.SYS_RESOURCE], fail_on_cap_error=True
        ),
    )
    before = open_fds()
    with pytest.raises(StageError) as caught:
        hardexec.Popen(["true"], policy=policy)
    assert caught.value.step == "keep_caps"
    assert wait_until(lambda: open_fds() == before), open_fds() - before
    assert wait_until(lambda: notify.pending() == 0)


def test_a_runner_timeout_under_a_filter_leaks_nothing(stage):
    spec = TaskSpec.command(["sh", "-c", "unshare -U true; exec sleep 30"], timeout=1, kill_after=1)
    result = run_task(spec, policy=filtered(DEFAULT))
    assert result.timed_out and result.signal == signal.SIGTERM
    assert dict(result.denied_syscalls) == {"unshare": 1}
    assert wait_until(lambda: notify.pending() == 0)


def test_the_parents_listener_is_close_on_exec_so_no_other_child_gets_it(stage):
    """A listener inherited by another child could answer the program's notifications (and
    let its denied syscalls run): it must never be inheritable."""
    proc = hardexec.Popen(["sleep", "5"], policy=filtered(DEFAULT))
    try:
        listeners = []
        deadline = time.monotonic() + 5
        while not listeners and time.monotonic() < deadline:
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(OSError):
                    if "seccomp notify" in os.readlink(f"/proc/self/fd/{fd}"):
                        listeners.append(int(fd))
            time.sleep(0.01)
        assert listeners, "the parent holds no listener"
        assert not any(os.get_inheritable(fd) for fd in listeners)
        other = subprocess.run(
            ["sh", "-c", "ls -l /proc/self/fd"], close_fds=False, capture_output=True, text=True
        )
        assert "seccomp" not in other.stdout
    finally:
        proc.kill()
        proc.wait()
