"""Verified runs (``verify=True``, ``hardexec run --verify``): the program is stopped at its
exec and checked against the policy before its first instruction.

A program that exceeds its policy, honestly: a launcher without CAP_SETPCAP (under ``capsh
--drop=cap_setpcap``) cannot empty the bounding set, so a copy of dash given
``cap_net_raw+ep`` regains NET_RAW at exec as nobody without no_new_privs; each such test
shows the gain happening without verify too. A set-user-ID-root copy of dash exceeds a policy
that runs as nobody without no_new_privs, from this root launcher itself. The programs are
dash, reading their own ``/proc/self/status`` with builtins only: what the checked process
itself holds.
"""

import asyncio
import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest

import hardexec
from hardexec import CgroupLimits, Confinement, Policy, SecurityConfig
from hardexec import verify as verify_mod
from hardexec.errors import PolicyError, StageError, VerifyError
from hardexec.report import parse_report
from helpers import parse_status, process_gone, processes, run_text, wait_until

HARDEXEC = [sys.executable, "-m", "hardexec"]
TESTS = str(Path(__file__).resolve().parents[1])
NOBODY = Policy(security=SecurityConfig(drop_all_caps=True, user="nobody"))
KEPT = Policy(
    security=SecurityConfig(
        drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True, user="nobody"
    )
)
# dash, printing lines of its own /proc/self/status with builtins only (no child process)
OWN = "while read -r l; do case $l in {}) echo $l;; esac; done < /proc/self/status"
WITHOUT_SETPCAP = ["capsh", "--drop=cap_setpcap", "--", "-c", 'exec "$0" "$@"']


@contextlib.contextmanager
def _program_dir():
    """A directory nobody can enter, on a filesystem that honours set-user-ID bits and file
    capabilities; removed afterwards."""
    where = tempfile.mkdtemp(prefix="hx-verify-")
    try:
        os.chmod(where, 0o755)
        if os.statvfs(where).f_flag & os.ST_NOSUID:
            pytest.fail(f"{where} is on a nosuid filesystem: file capabilities would not apply")
        yield where
    finally:
        shutil.rmtree(where)


@pytest.fixture
def file_cap_shell():
    """A copy of dash with cap_net_raw+ep (NET_RAW is 0000000000002000)."""
    with _program_dir() as where:
        program = os.path.join(where, "sh")
        shutil.copyfile("/bin/dash", program)
        os.chmod(program, 0o755)
        subprocess.run(["setcap", "cap_net_raw+ep", program], check=True)
        yield program


@pytest.fixture
def setuid_shell():
    """A copy of dash, set-user-ID root."""
    with _program_dir() as where:
        program = os.path.join(where, "sh")
        shutil.copyfile("/bin/dash", program)
        os.chmod(program, 0o4755)
        yield program


def running(program: str) -> list[int]:
    """Processes now running ``program`` (by their exe)."""
    found = []
    for pid, *_ in processes():
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/exe") == program:
                found.append(pid)
    return found


# --- conforming programs run as they would unverified --------------------------------------


def test_a_conforming_program_runs_with_its_output_intact(stage):
    fields = "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Uid|Gid|Groups|Seccomp|TracerPid):"
    argv = ["sh", "-c", f"seq 1 20000; exec grep -E '{fields}' /proc/self/status"]
    plain = hardexec.run(argv, policy=KEPT, capture_output=True, text=True)
    verified = hardexec.run(argv, policy=KEPT, capture_output=True, text=True, verify=True)
    assert (verified.returncode, verified.stderr) == (0, "")
    assert verified.stdout == plain.stdout
    lines = verified.stdout.splitlines()
    assert lines[:20000] == [str(n) for n in range(1, 20001)]
    status = parse_status("\n".join(lines[20000:]))
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status[name] == "0000000000000400", name
    assert status["Uid"].split() == status["Gid"].split() == ["65534"] * 4
    assert (status["NoNewPrivs"], status["TracerPid"]) == ("1", "0")  # detached


def test_a_conforming_popen_returns_a_running_program(stage):
    script = "trap 'echo got USR1; exit 3' USR1; echo ready; while :; do sleep 0.05; done"
    argv = ["sh", "-c", script]
    with hardexec.Popen(argv, policy=KEPT, verify=True, stdout=subprocess.PIPE) as p:
        try:
            assert p.stdout.readline() == b"ready\n"
            p.send_signal(signal.SIGUSR1)  # after the check, signals reach it as ever
            out, _ = p.communicate(timeout=30)
        except BaseException:
            p.kill()
            raise
    assert (p.returncode, out) == (3, b"got USR1\n")


# --- programs beyond their policy ----------------------------------------------------------

INNER = (
    textwrap.dedent(
        """
    import json, os, sys, warnings
    sys.path.insert(0, TESTS)
    import hardexec
    from hardexec import CgroupLimits, Policy, SecurityConfig
    from helpers import hardexec_groups

    warnings.simplefilter("ignore")  # the bounding set's warning: no CAP_SETPCAP here
    program, out_path = sys.argv[1:]
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True, user="nobody"), cgroups=CgroupLimits()
    )
    own = OWN.format("CapPrm*")
    plain = hardexec.run([program, "-c", own], policy=policy, capture_output=True, text=True)
    fds, groups = sorted(os.listdir("/proc/self/fd")), hardexec_groups()
    error = None
    with open(out_path, "w") as out:
        try:
            hardexec.run([program, "-c", "echo ran"], policy=policy, stdout=out, verify=True)
        except hardexec.VerifyError as err:
            error = [str(err), err.step, list(err.differences)]
    try:
        child = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        child = None
    print(json.dumps({
        "plain": plain.stdout,
        "error": error,
        "fds_kept": sorted(os.listdir("/proc/self/fd")) == fds,
        "groups_kept": hardexec_groups() == groups,
        "child": None if child is None else child.si_pid,
    }))
    """
    )
    .replace("TESTS", repr(TESTS))
    .replace("OWN", repr(OWN))
)

BEYOND = "verify: the program holds CapPrm 0000000000002000 (NET_RAW), CapEff 0000000000002000 "
KILLED = "; it was killed before its first instruction"
NOT_RUN = (
    "beyond the policy (none)" + KILLED + " (CapBnd: the launcher lacks CAP_SETPCAP, so the "
    "stage could not empty it)"
)


def test_a_program_beyond_its_policy_is_killed_before_its_first_instruction(
    stage, file_cap_shell, tmp_path
):
    out = tmp_path / "out"
    result = run_text(
        [*WITHOUT_SETPCAP, sys.executable, "-c", INNER, file_cap_shell, str(out)], timeout=60
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["plain"] == "CapPrm: 0000000000002000\n"  # without verify, the gain happens
    text, step, differences = found["error"]
    assert text.startswith(BEYOND + "(NET_RAW), CapBnd ")
    assert text.endswith(NOT_RUN)
    assert step == "verify"
    assert differences == [text.removeprefix("verify: ").split(KILLED)[0]]
    assert out.read_text() == ""  # it never ran: "echo ran" wrote nothing
    assert (found["fds_kept"], found["groups_kept"], found["child"]) == (True, True, None)
    assert running(file_cap_shell) == []


def test_the_command_refuses_it_with_exit_125(stage, file_cap_shell):
    options = ["run", "--drop-all-caps", "--user", "nobody"]
    argv = [file_cap_shell, "-c", "echo ran; " + OWN.format("CapPrm*")]
    plain = run_text([*WITHOUT_SETPCAP, *HARDEXEC, *options, "--", *argv], timeout=60)
    assert (plain.returncode, plain.stdout) == (0, "ran\nCapPrm: 0000000000002000\n")
    result = run_text([*WITHOUT_SETPCAP, *HARDEXEC, *options, "--verify", "--", *argv], timeout=60)
    assert (result.returncode, result.stdout) == (125, "")
    (refusal,) = result.stderr.splitlines()  # one line
    assert refusal.startswith("hardexec: " + BEYOND + "(NET_RAW), CapBnd 000001")
    assert refusal.endswith(NOT_RUN)
    assert running(file_cap_shell) == []


def test_a_set_user_id_program_is_caught_by_its_ids(stage, setuid_shell):
    policy = Policy(security=SecurityConfig(user="nobody"))
    own = OWN.format("Uid*")
    plain = hardexec.run([setuid_shell, "-p", "-c", own], policy=policy, capture_output=True)
    assert plain.stdout.split() == [b"Uid:", b"65534", b"0", b"0", b"0"]  # it gains euid 0
    with pytest.raises(VerifyError) as caught:
        hardexec.run([setuid_shell, "-p", "-c", "echo ran"], policy=policy, verify=True)
    assert str(caught.value) == (
        "verify: Uid is 65534 0 0 0, not the policy's 65534; it was killed before its first "
        "instruction"
    )
    assert isinstance(caught.value, StageError) and caught.value.errno == 1
    assert running(setuid_shell) == []


def test_nothing_is_left_of_a_refused_program_with_a_cgroup(stage, setuid_shell):
    policy = Policy(security=SecurityConfig(user="nobody"), cgroups=CgroupLimits())
    with pytest.raises(VerifyError):
        hardexec.Popen([setuid_shell, "-c", "sleep 30"], policy=policy, verify=True)
    assert running(setuid_shell) == []  # and the leak check: no cgroup, fd or child


# --- what cannot be verified is refused ------------------------------------------------------


def test_a_pid_namespace_cannot_be_verified():
    policy = Policy(
        security=SecurityConfig(drop_all_caps=True),
        confinement=Confinement(namespaces=["pid"]),
        cgroups=CgroupLimits(),
    )
    with pytest.raises(PolicyError, match="verify cannot be combined with.*'pid'"):
        hardexec.run(["true"], policy=policy, verify=True)
    result = run_text([*HARDEXEC, "run", "--verify", "--pid-ns", "--", "echo", "ran"])
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr.startswith("hardexec: --verify cannot be combined with --pid-ns: ")


def test_verify_needs_a_policy():
    with pytest.raises(PolicyError, match="needs a policy"):
        hardexec.run(["true"], verify=True)
    with pytest.raises(TypeError, match="verify"):
        hardexec.run(["true"], policy=KEPT, verify="yes")


def test_a_kernel_that_refuses_to_trace_refuses_the_run(stage):
    """hardexec itself under a seccomp filter that refuses ptrace: the run never starts."""
    inner = [*HARDEXEC, "run", "--verify", "--drop-all-caps", "--", "echo", "ran"]
    result = run_text([*HARDEXEC, "run", "--syscalls-deny", "ptrace", "--", *inner], timeout=60)
    assert (result.returncode, result.stdout) == (125, "")
    refusal, denied = result.stderr.splitlines()
    assert refusal.startswith(
        "hardexec: trace failed: [Errno 1] Operation not permitted (the kernel refused to let "
        "hardexec trace the program at its exec ("
    )
    assert "a seccomp filter hardexec itself runs under" in refusal  # the reason, named
    assert refusal.endswith(
        "), so it was not started; without verify the policy is still applied, every step "
        "failing closed as the stage reports, but what the program holds after its exec is not "
        "checked)"
    )
    assert denied == "hardexec: denied syscalls: ptrace (1)"


# --- signals and the launcher's death --------------------------------------------------------


def _signalling(monkeypatch, sig):
    """Make the check send ``sig`` to the program while it is stopped at its exec."""
    check = verify_mod.differences

    def differences(status, policy, confined):
        os.kill(int(status["Pid"]), sig)
        return check(status, policy, confined)

    monkeypatch.setattr(verify_mod, "differences", differences)


def test_a_signal_sent_while_it_is_stopped_is_delivered_after(stage, monkeypatch):
    _signalling(monkeypatch, signal.SIGUSR1)
    done = hardexec.run(["sh", "-c", "echo ran"], policy=KEPT, capture_output=True, verify=True)
    # delivered before its first instruction: SIGUSR1's default ends it, so nothing printed
    assert (done.returncode, done.stdout) == (-signal.SIGUSR1, b"")


def _state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _stopped_then_continued(argv, **kwargs):
    with hardexec.Popen(argv, policy=KEPT, verify=True, stdout=subprocess.PIPE, **kwargs) as p:
        try:
            assert wait_until(lambda: _state(p.pid) == "T", timeout=10), _state(p.pid)
            p.send_signal(signal.SIGCONT)
            out, _ = p.communicate(timeout=30)
        except BaseException:
            p.kill()
            raise
    return p.returncode, out


def test_a_stop_sent_while_it_is_stopped_stops_it_after(stage, monkeypatch):
    _signalling(monkeypatch, signal.SIGSTOP)
    assert _stopped_then_continued(["sh", "-c", "echo ran"]) == (0, b"ran\n")


def test_signals_before_the_exec_are_passed_on_and_a_stop_kept_for_the_program(stage, monkeypatch):
    """SIGWINCH and SIGSTOP reach the stage while it is stopped for its tracer: the first is
    passed on (ignored by default), the stop is given to the program once it is checked."""
    handle = verify_mod.Tracee._stopped

    def stopped(tracee, sig):
        if not tracee.ready:
            os.kill(tracee.pid, signal.SIGWINCH)
            os.kill(tracee.pid, signal.SIGSTOP)
        return handle(tracee, sig)

    monkeypatch.setattr(verify_mod.Tracee, "_stopped", stopped)
    assert _stopped_then_continued(["sh", "-c", "echo ran"]) == (0, b"ran\n")


LAUNCHER = textwrap.dedent(
    """
    import os, sys, time
    import hardexec
    from hardexec import Policy, SecurityConfig
    from hardexec import verify

    def differences(status, policy, confined):
        print(status["Pid"], flush=True)
        time.sleep(100)  # killed here, the program stopped at its exec

    verify.differences = differences
    policy = Policy(security=SecurityConfig(drop_all_caps=True, user="nobody"))
    with open(sys.argv[1], "w") as out:
        hardexec.run(["sh", "-c", "echo ran"], policy=policy, stdout=out, verify=True)
    """
)


def test_kill_9_of_the_launcher_while_the_program_is_stopped_leaves_nothing_running(
    stage, tmp_path
):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(out)], stdout=subprocess.PIPE, text=True
    )
    pid = None
    try:
        pid = int(launcher.stdout.readline())
        assert _state(pid) == "t"  # stopped by its tracer, at its exec
        launcher.kill()
        launcher.wait(timeout=30)
        assert wait_until(lambda: process_gone(pid), timeout=10)
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
        if pid is not None and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert out.read_text() == ""  # it never ran


# --- asyncio ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _child_watcher(kind):
    """asyncio's child watcher set to ``kind`` for the test (put back after)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = asyncio.get_event_loop_policy()
        before = policy._watcher
        watcher = kind()
        policy._watcher = watcher
    try:
        yield watcher
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            policy._watcher = before
            watcher.close()


needs_watchers = pytest.mark.skipif(
    not hasattr(asyncio, "PidfdChildWatcher"),
    reason="Python 3.14+ has no child watchers to choose: asyncio waits on pidfds itself",
)


async def _spawn(argv, policy, **kwargs):
    proc = await hardexec.create_subprocess_exec(
        *argv, policy=policy, stdout=subprocess.PIPE, verify=True, **kwargs
    )
    out, _ = await proc.communicate()
    return proc.returncode, out


def _with_pidfds(coro_factory):
    async def main():
        if not hasattr(asyncio, "PidfdChildWatcher"):
            return await coro_factory()
        with _child_watcher(asyncio.PidfdChildWatcher) as watcher:
            watcher.attach_loop(asyncio.get_running_loop())
            return await coro_factory()

    return asyncio.run(main())


def test_asyncio_runs_a_conforming_program(stage):
    own = OWN.format("Cap*|TracerPid*")
    status, out = _with_pidfds(lambda: _spawn(["sh", "-c", own], KEPT))
    assert status == 0
    assert out.decode().split("\n") == [
        "TracerPid: 0",  # detached
        *(f"{name}: 0000000000000400" for name in ("CapInh", "CapPrm", "CapEff", "CapBnd")),
        "CapAmb: 0000000000000400",
        "",
    ]


def test_asyncio_kills_a_program_beyond_its_policy(stage, setuid_shell):
    policy = Policy(security=SecurityConfig(user="nobody"))
    with pytest.raises(VerifyError, match=r"^verify: Uid is 65534 0 0 0, not the policy's"):
        _with_pidfds(lambda: _spawn([setuid_shell, "-c", "echo ran"], policy))
    assert running(setuid_shell) == []


@needs_watchers
def test_asyncio_refuses_a_watcher_that_calls_waitpid():
    async def main():
        with _child_watcher(asyncio.ThreadedChildWatcher):
            await _spawn(["true"], KEPT)

    with pytest.raises(PolicyError, match="child watcher is ThreadedChildWatcher"):
        asyncio.run(main())


# --- the pieces -------------------------------------------------------------------------------


def test_the_report_passes_over_the_tracer_record_and_explains_a_refusal():
    assert parse_report(b"T trace 0 -\nW capset 1 -\n", "x").warnings[0].step == "capset"
    error = parse_report(b"F trace 3 -\n", "x").error
    assert isinstance(error, VerifyError)
    assert str(error) == (
        "trace failed: [Errno 3] No such process (the launcher stopped tracing the exec stage "
        "before the program started)"
    )


def test_verify_error_survives_pickling():
    error = verify_mod.refusal(["Seccomp is 0, not 2 (the policy's filter)"])
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.differences) == (
        VerifyError,
        "verify: Seccomp is 0, not 2 (the policy's filter); it was killed before its first "
        "instruction",
        ("Seccomp is 0, not 2 (the policy's filter)",),
    )


def test_the_runner_checks_every_attempt(stage, setuid_shell):
    from hardexec import Runner, TaskSpec

    async def main():
        runner = Runner(policy=KEPT, verify=True)
        result = await runner.run(TaskSpec.command(["sh", "-c", OWN.format("CapEff*|TracerPid*")]))
        beyond = Runner(policy=Policy(security=SecurityConfig(user="nobody")), verify=True)
        with pytest.raises(VerifyError, match=r"^verify: Uid is 65534 0 0 0, not the policy's"):
            await beyond.run(TaskSpec.command([setuid_shell, "-c", "echo ran"], retries=2))
        return result, beyond.metrics.count(beyond.name, "spawn_failed")

    result, failed = asyncio.run(main())
    assert (result.exit_code, result.stdout) == (0, "TracerPid: 0\nCapEff: 0000000000000400\n")
    assert failed == 1  # refused once, not retried
    assert running(setuid_shell) == []


# --- what review found: waiters that take the stops, a launcher without CAP_KILL --------------

STOLEN = textwrap.dedent(
    """
    import os, sys, threading
    sys.path.insert(0, sys.argv[1])
    import hardexec
    from hardexec import Policy, SecurityConfig
    from hardexec.errors import VerifyError

    def reap():  # a thread that takes every child's news, as some programs have
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                threading.Event().wait(0.001)

    threading.Thread(target=reap, daemon=True).start()
    policy = Policy(security=SecurityConfig(drop_all_caps=True))
    for _ in range(10):
        try:
            hardexec.run(["/bin/true"], policy=policy, verify=True)
            print("ran")  # hardexec heard of both stops first: it was checked
        except VerifyError as err:
            print(err.step, err.errno)

    def parent(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[1]
        except OSError:
            return None

    children = [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == str(os.getpid())]
    print("left:", children)
    """
)


def test_a_waiter_that_takes_the_stops_refuses_the_run_never_hangs(stage):
    """A stop the tracer never hears of would be waited for for ever, the stage stopped: now
    each run is either checked (hardexec heard first) or refused, and nothing is left."""
    got = subprocess.run(
        [sys.executable, "-c", STOLEN, TESTS], capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 0, got.stderr
    lines = got.stdout.splitlines()
    assert lines[-1] == "left: []"  # no stopped stage, no program
    assert len(lines) == 11 and set(lines[:-1]) <= {"ran", "trace 10"}, lines


def test_a_launcher_without_cap_kill_still_kills_a_program_beyond_its_policy(setuid_shell):
    """The program switched to nobody (and gained euid 0): kill(2) is refused without
    CAP_KILL, but its tracer can still end it."""
    got = subprocess.run(
        [
            "capsh",
            "--drop=cap_kill",
            "--",
            "-c",
            f'exec "$0" -m hardexec run --verify --user nobody -- {setuid_shell} -p -c "echo ran"',
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 125, got.stderr
    assert got.stdout == ""
    assert got.stderr.startswith("hardexec: verify: Uid is 65534 0 0 0, not the policy's 65534")
    assert running(setuid_shell) == []
