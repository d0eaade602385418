"""The command's duties around the program: signals, the terminal, leftovers, its own death.

Each test runs hardexec in a session of its own (so a signal to its process group reaches
nothing of pytest) and ends every process it started, by pid, even when an assertion fails.
"""

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from helpers import descendants, hardexec_groups, parse_status, run_text, wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]
# exec: nothing to supervise, hardexec becomes the program; supervised: it stays resident.
MODES = {"exec": ["--no-new-privs"], "cgroup": ["--cgroup"], "usage": ["--usage"]}

# Counts the SIGTERMs it gets; SIGUSR1 (sent after the SIGTERM, through hardexec too, so it
# arrives after any duplicate) makes it print the count and exit.
COUNTER = """
import os, signal, sys
terms = 0
def term(signum, frame):  # os.write: the handler may run inside print's own flush
    global terms
    terms += 1
    os.write(1, b"term\\n")
def report(signum, frame):
    os.write(1, f"terms={terms}\\n".encode())
    os._exit(0)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, report)
print("ready", os.getpid(), os.getpgrp(), flush=True)
while True:
    signal.pause()
"""


@pytest.fixture(autouse=True)
def _bounded():
    """A test that would hang fails instead (its finally blocks still end what it started)."""

    def expire(signum, frame):
        raise TimeoutError("test took over 60 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def start(*args, **kwargs):
    return subprocess.Popen(
        [*HARDEXEC, *args], stdout=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )


def stop(proc, *pids):
    """End what a test started, by pid: the leftovers first, then hardexec."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout:
        proc.stdout.close()


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever inherited it: either way it runs no more."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def groups_of(pid):
    """The cgroups hardexec ``pid`` made (named after it), so other tests' groups never count."""
    return {
        path for path in hardexec_groups() if path.rsplit("/", 1)[1].startswith(f"hardexec-{pid}-")
    }


def run_hx(*args):
    """Run hardexec to its end: its result and its pid."""
    proc = subprocess.Popen(
        [*HARDEXEC, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["process group", "pid"])
def test_a_signal_reaches_the_program_exactly_once(mode, target):
    proc = start("run", *MODES[mode], "--", sys.executable, "-I", "-c", COUNTER)
    try:
        ready, pid, pgid = proc.stdout.readline().split()
        assert ready == "ready"
        if mode != "exec":  # its own group: a signal to hardexec's group is not also its own
            assert int(pgid) == int(pid) != os.getpgid(proc.pid)
        if target == "pid":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.stdout.readline() == "term\n"
        os.kill(proc.pid, signal.SIGUSR1)
        assert proc.stdout.readline() == "terms=1\n"
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc)


IGNORING = """
import os, signal, sys
for name in sys.argv[1].split(","):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
for name in ("SIGPIPE", "SIGXFSZ"):  # Python's own ignores, not the launcher's wish
    signal.signal(getattr(signal, name), signal.SIG_DFL)
os.execvp(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.parametrize("mode", MODES)
def test_nohup_the_program_inherits_sighup_ignored(mode):
    plain = run_text(["nohup", "grep", "^SigIgn", "/proc/self/status"], stdin=subprocess.DEVNULL)
    under = run_text(
        ["nohup", *HARDEXEC, "run", *MODES[mode], "--", "grep", "^SigIgn", "/proc/self/status"],
        stdin=subprocess.DEVNULL,
    )
    assert under.returncode == 0, under.stderr
    ignored = int(parse_status(under.stdout)["SigIgn"], 16)
    assert ignored & 1 << (signal.SIGHUP - 1)
    assert under.stdout == plain.stdout  # nothing else ignored or un-ignored either


@pytest.mark.parametrize("mode", MODES)
def test_every_inherited_ignored_signal_stays_ignored(mode):
    names = "SIGHUP,SIGINT,SIGQUIT,SIGTERM,SIGUSR1,SIGUSR2"
    launch = [sys.executable, "-I", "-c", IGNORING, names]
    plain = run_text([*launch, "grep", "^SigIgn", "/proc/self/status"])
    under = run_text(
        [*launch, *HARDEXEC, "run", *MODES[mode], "--", "grep", "^SigIgn", "/proc/self/status"]
    )
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout


LEFTOVER = (
    # a daemon in a session of its own, which writes its pid before the program goes on
    'setsid sh -c \'echo $$ > "$0"; exec sleep 1000\' "$0" </dev/null >/dev/null 2>&1 & '
    'while [ ! -s "$0" ]; do sleep 0.01; done; '
)


def leftover_pid(path):
    return int(path.read_text())


def test_leftovers_are_killed_and_the_group_removed_when_the_program_ends(tmp_path):
    pidfile = tmp_path / "pid"
    result, hardexec = run_hx("run", "--cgroup", "--", "sh", "-c", LEFTOVER, str(pidfile))
    pid = leftover_pid(pidfile)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert dead(pid)  # already: hardexec waited for its group to empty
        assert groups_of(hardexec) == set()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_leftovers_are_killed_when_hardexec_is_told_to_end(tmp_path):
    pidfile = tmp_path / "pid"
    program = LEFTOVER + "echo up; exec sleep 1000"
    proc = start("run", "--cgroup", "--", "sh", "-c", program, str(pidfile))
    pid = None
    try:
        assert proc.stdout.readline() == "up\n"
        pid = leftover_pid(pidfile)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM  # the program's own end, passed on
        assert dead(pid)
        assert groups_of(proc.pid) == set()
    finally:
        stop(proc, *([pid] if pid else []))


def test_without_a_cgroup_the_program_process_group_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    # no setsid: the background sleep stays in the program's process group
    program = 'sh -c \'echo $$ > "$0"; exec sleep 1000\' "$0" </dev/null >/dev/null 2>&1 & '
    program += 'while [ ! -s "$0" ]; do sleep 0.01; done'
    result = run_text([*HARDEXEC, "run", "--usage", "--", "sh", "-c", program, str(pidfile)])
    pid = leftover_pid(pidfile)
    try:
        assert result.returncode == 0, result.stderr
        assert dead(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("option", "detach"),
    [("--cgroup", "setsid"), ("--usage", "")],  # without a cgroup: its process group only
)
def test_keep_leftovers_waits_for_them(tmp_path, option, detach):
    done = tmp_path / "done"
    program = (
        f'{detach} sh -c \'sleep 0.2; echo finished > "$0"\' "$0" </dev/null >/dev/null 2>&1 &'
    )
    result, hardexec = run_hx(
        "run", option, "--keep-leftovers", "--", "sh", "-c", program, str(done)
    )
    assert result.returncode == 0, result.stderr
    assert done.read_text() == "finished\n"  # hardexec returned only once the daemon had ended
    assert groups_of(hardexec) == set()


def test_keep_leftovers_still_kills_them_when_told_to_end(tmp_path):
    pidfile = tmp_path / "pid"
    program = LEFTOVER + "echo $$"
    proc = start("run", "--cgroup", "--keep-leftovers", "--", "sh", "-c", program, str(pidfile))
    pid = None
    try:
        shell = int(proc.stdout.readline())
        pid = leftover_pid(pidfile)
        assert wait_until(lambda: dead(shell), timeout=30)  # the program has ended, and yet
        assert proc.poll() is None  # hardexec waits for the daemon
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # the program's status: it ended by itself
        assert dead(pid)
        assert groups_of(proc.pid) == set()
    finally:
        stop(proc, *([pid] if pid else []))


def test_kill_9_of_a_supervising_hardexec_takes_the_program_along():
    proc = start("run", "--usage", "--", "sh", "-c", "echo $$; exec sleep 1000")
    pid = None
    try:
        pid = int(proc.stdout.readline())
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        assert wait_until(lambda: dead(pid), timeout=10)
    finally:
        stop(proc, *([pid] if pid else []))


# A shell's part, in a terminal: run hardexec in the foreground, and when it stops (^Z),
# check the terminal is back and continue it, as `fg` would.
SHELL = """
import os, signal, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
while True:
    _, status = os.waitpid(pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        break
    print("shell: stopped; terminal back:", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
    os.kill(pid, signal.SIGCONT)
print("shell: exit", os.waitstatus_to_exitcode(status),
      "terminal back:", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
"""

INTERACTIVE = """
import os, signal, sys
ints = 0
def on_int(signum, frame):
    global ints
    ints += 1
    os.write(1, b"got ^C\\n")
signal.signal(signal.SIGINT, on_int)
print("foreground:", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
first = sys.stdin.readline().strip()
print("ints:", ints, "read:", first, flush=True)
second = sys.stdin.readline().strip()
print("read:", second, "foreground:", os.tcgetpgrp(0) == os.getpgrp(), flush=True)
"""


class Pty:
    """The master side of a terminal, read line by line up to an expected text."""

    def __init__(self, fd):
        self.fd = fd
        self.seen = b""

    def expect(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.seen!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: every slave end is closed
                    chunk = b""
                assert chunk, f"terminal closed without {text!r}: {self.seen!r}"
                self.seen += chunk
        before, _, self.seen = self.seen.partition(text.encode())
        return before.decode()

    def send(self, data):
        os.write(self.fd, data)


def test_in_a_terminal_the_program_has_it_and_job_control_works():
    program = [sys.executable, "-I", "-c", INTERACTIVE]
    argv = [sys.executable, "-I", "-c", SHELL, sys.executable, "-m", "hardexec", "run"]
    argv += ["--cgroup", "--", *program]
    env = dict(os.environ)
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader whose controlling terminal is the pty
        try:
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    term = Pty(fd)
    try:
        term.expect("foreground: True")
        term.send(b"\x03")  # ^C: to the foreground group, the program's only
        term.expect("got ^C")
        term.send(b"first\n")
        term.expect("ints: 1 read: first")
        term.send(b"\x1a")  # ^Z: the program stops, then hardexec, and the shell has the terminal
        term.expect("shell: stopped; terminal back: True")
        term.send(b"second\n")  # read by the program once it is continued in the foreground
        term.expect("read: second foreground: True")
        term.expect("shell: exit 0 terminal back: True")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:  # failed midway: end hardexec and the program too (they may be stopped)
            for leftover in [*reversed(descendants(pid)), pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leftover, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
