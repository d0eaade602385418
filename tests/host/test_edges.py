"""The edges: what the privileged stage may see, what outlives whom, signals, subprocess parity.

Each test here failed before the fix it names (the edges issue): it checks what the program,
or a witness the test compiled, actually observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import hardexec
import hardexec.spawn_core
from hardexec import CgroupLimits, Policy, PolicyError, SecurityConfig
from hardexec.stage import NATIVE_STAGE, TWIN_STAGE
from helpers import parse_status, wait_until

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "hardexec" / "stage" / "stage.c"
NOBODY = Policy(security=SecurityConfig(user="nobody", drop_all_caps=True))

EVIL = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Runs in every process that loads it: appends its Uid and CapEff lines to $EVIL_OUT. */
__attribute__((constructor)) static void evil(void)
{
    const char *out = getenv("EVIL_OUT");
    char buf[4096], line[256];
    int fd = open("/proc/self/status", O_RDONLY), o;
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (n <= 0 || !out)
        return;
    buf[n] = 0;
    const char *uid = strstr(buf, "\nUid:"), *eff = strstr(buf, "\nCapEff:");
    if (!uid || !eff)
        return;
    size_t a = strcspn(uid + 1, "\n"), b = strcspn(eff + 1, "\n");
    if (a + b + 3 > sizeof line)
        return;
    memcpy(line, uid + 1, a);
    line[a] = ' ';
    memcpy(line + a + 1, eff + 1, b);
    line[a + b + 1] = '\n';
    o = open(out, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (o >= 0) {
        write(o, line, a + b + 2);
        close(o);
    }
}
"""


@pytest.fixture(scope="module")
def public_dir():
    """A directory user nobody can reach (pytest's own temp dirs are private to root)."""
    where = Path(tempfile.mkdtemp(prefix="edges-", dir="/tmp"))
    os.chmod(where, 0o777)
    yield where
    shutil.rmtree(where)


@pytest.fixture(scope="module")
def builds(public_dir):
    """The preload library, and a C-library dynamic build of the stage (the loader's target)."""
    where = public_dir
    (where / "evil.c").write_text(EVIL)
    evil = where / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(evil), str(where / "evil.c")], check=True)
    dynamic = where / "hardexec-stage-dynamic"
    subprocess.run(["gcc", "-O2", "-o", str(dynamic), str(SOURCE)], check=True)
    return evil, dynamic


@pytest.fixture(params=["installed", "libc-dynamic", "python"])
def any_stage(request, builds, monkeypatch):
    """Every stage build there is: the installed one, a dynamic libc one, and the twin."""
    _, dynamic = builds
    command = {
        "installed": (str(NATIVE_STAGE),),
        "libc-dynamic": (str(dynamic),),
        "python": (sys.executable, "-I", "-S", str(TWIN_STAGE)),
    }[request.param]
    monkeypatch.setattr(hardexec.spawn_core, "stage_command", lambda: command)
    return request.param


def test_the_programs_ld_preload_never_runs_in_the_privileged_stage(any_stage, builds, public_dir):
    evil, _ = builds
    out = public_dir / f"seen-{any_stage}"  # the program, as nobody, records itself too
    env = dict(os.environ, LD_PRELOAD=str(evil), EVIL_OUT=str(out))
    sitedir = public_dir / "site"  # and what an interpreter would read, for the twin
    sitedir.mkdir(exist_ok=True)
    (sitedir / "sitecustomize.py").write_text(f"open({str(out)!r}, 'a').write('python ran\\n')")
    env.update(PYTHONPATH=str(sitedir), PYTHONSTARTUP=str(sitedir / "sitecustomize.py"))
    result = hardexec.run(["/bin/true"], policy=NOBODY, env=env)
    assert result.returncode == 0
    seen = out.read_text().splitlines()
    # The program itself loaded it (so the preload was live), as nobody with nothing...
    assert seen and all(line.split()[:2] == ["Uid:", "65534"] for line in seen), seen
    assert all(line.endswith("0000000000000000") for line in seen), seen
    # ...and nothing else did: no line from a uid-0 process, no interpreter hook.
    assert "python ran" not in seen


def test_the_program_gets_exactly_its_environment(stage):
    """No LC_CTYPE from CPython's locale coercion, nothing of the launcher's, duplicates kept
    out as subprocess keeps them out (a mapping)."""
    env = {"A": "1", "PATH": os.environ["PATH"], "LANG": "C"}
    ours = hardexec.run(["env"], policy=NOBODY, env=env, capture_output=True, text=True)
    theirs = subprocess.run(["env"], env=env, capture_output=True, text=True)
    assert ours.stdout == theirs.stdout == "A=1\nPATH={}\nLANG=C\n".format(env["PATH"])
    empty = hardexec.run(["/usr/bin/env"], policy=NOBODY, env={}, capture_output=True, text=True)
    assert empty.stdout == ""


def test_bad_environments_fail_like_subprocess_and_leave_nothing(stage):
    for env, message in (({"A=B": "1"}, "illegal environment variable name"),
                         ({"A": "x\0y"}, "embedded null byte")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            subprocess.run(["true"], env=env)
        with pytest.raises(ValueError, match=message):
            hardexec.run(["true"], policy=NOBODY, env=env)


def test_close_fds_false_with_pass_fds_passes_only_those_and_warns(stage):
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        os.set_inheritable(w1, True)
        os.set_inheritable(w2, True)
        probe = ["sh", "-c", f"ls /proc/self/fd; true >&{w1} && echo w1 open"]
        with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
            theirs = subprocess.run(
                probe, close_fds=False, pass_fds=[w2], capture_output=True, text=True
            )
        with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds") as record:
            ours = hardexec.run(
                probe, policy=NOBODY, close_fds=False, pass_fds=[w2], capture_output=True, text=True
            )
        assert record[0].filename == __file__
        assert "w1 open" not in theirs.stdout and "w1 open" not in ours.stdout
        assert str(w2) in ours.stdout.split()
        assert sorted(ours.stdout.split()) == sorted(theirs.stdout.split())

        async def spawn():
            proc = await hardexec.create_subprocess_exec(
                *probe, policy=NOBODY, close_fds=False, pass_fds=[w2],
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            return out.decode()

        with pytest.warns(RuntimeWarning, match="pass_fds overriding close_fds"):
            assert "w1 open" not in asyncio.run(spawn())
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def sig_ignored(stdout: str) -> int:
    return int(parse_status(stdout)["SigIgn"], 16)


def bit(sig: int) -> int:
    return 1 << (sig - 1)


@pytest.mark.parametrize("restore", [True, False])
def test_signal_dispositions_are_what_subprocess_gives(stage, restore):
    probe = ["cat", "/proc/self/status"]
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        theirs = subprocess.run(probe, restore_signals=restore, capture_output=True, text=True)
        ours = hardexec.run(
            probe, policy=NOBODY, restore_signals=restore, capture_output=True, text=True
        )
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert sig_ignored(ours.stdout) == sig_ignored(theirs.stdout)
    assert sig_ignored(ours.stdout) & bit(signal.SIGHUP)
    piped = bool(sig_ignored(ours.stdout) & bit(signal.SIGPIPE))
    assert piped is (not restore)


def test_nineteen_thousand_supplementary_groups_reach_the_program(stage):
    groups = list(range(100_000, 119_000))
    policy = Policy(security=SecurityConfig(user="nobody", supplementary_groups=groups))
    result = hardexec.run(["cat", "/proc/self/status"], policy=policy, capture_output=True)
    assert result.returncode == 0, result.stderr
    held = [int(g) for g in parse_status(result.stdout.decode())["Groups"].split()]
    assert held == groups


def test_e2big_names_the_program_like_subprocess(stage):
    argv = ["/bin/true", "x" * (200 * 1024)]  # one argument over MAX_ARG_STRLEN
    with pytest.raises(OSError) as theirs:
        subprocess.run(argv)
    with pytest.raises(OSError) as ours:
        hardexec.run(argv, policy=NOBODY)
    assert ours.value.errno == theirs.value.errno == errno.E2BIG
    assert ours.value.filename == theirs.value.filename == "/bin/true"


def test_popen_takes_subprocess_positional_arguments(stage):
    with hardexec.Popen(["echo", "hi"], None, None, None, subprocess.PIPE, policy=NOBODY) as p:
        assert p.stdout.read() == b"hi\n"
    assert p.returncode == 0
    with pytest.raises(TypeError, match="multiple values for argument 'stdout'"):
        hardexec.Popen(["true"], -1, None, None, None, policy=NOBODY, stdout=None)


def test_subprocess_identity_keywords_join_the_policy(stage):
    policy = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))
    result = hardexec.run(
        ["cat", "/proc/self/status"], policy=policy, user="nobody", group="nogroup",
        extra_groups=[7], capture_output=True, text=True,
    )  # fmt: skip
    status = parse_status(result.stdout)
    assert status["Uid"].split()[0] == "65534" and status["Gid"].split()[0] == "65534"
    assert status["Groups"] == "7"
    assert status["CapEff"] == "0000000000000000" and status["NoNewPrivs"] == "1"


def test_executable_is_searched_on_path_and_empty_names_fail_like_subprocess(stage):
    out = hardexec.run(["anything"], executable="echo", policy=NOBODY, capture_output=True)
    assert out.stdout == b"\n"  # argv[0] is "anything"; echo prints the empty rest
    for kwargs in ({"args": [""]}, {"args": ["true"], "executable": ""}):
        with pytest.raises(OSError) as theirs:
            subprocess.run(**kwargs)
        with pytest.raises(OSError) as ours:
            hardexec.run(policy=NOBODY, **kwargs)
        assert type(ours.value) is type(theirs.value)
        assert (ours.value.errno, ours.value.filename) == (theirs.value.errno, "")


def test_the_twin_turns_any_internal_error_into_a_failure_record(tmp_path):
    """Not exit 1 and a traceback, which would pass for the program's own status."""
    breaker = (
        "import os, runpy, sys\n"
        "os.setresgid = lambda *a: 1 / 0\n"  # an exception no step expects
        f"sys.argv = [{str(TWIN_STAGE)!r}, *sys.argv[1:]]\n"
        f"runpy.run_path({str(TWIN_STAGE)!r}, run_name='__main__')\n"
    )
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", breaker, f"--report-fd={write_fd}",
             "--gid=65534", "--", "true"],
            pass_fds=[write_fd], capture_output=True,
        )  # fmt: skip
        os.close(write_fd)
        write_fd = -1
        record = os.read(read_fd, 4096)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    assert proc.returncode == 125 and proc.stderr == b""
    assert record == b"F internal 5 -\n"


def test_die_with_parent_kills_the_program_when_the_launcher_is_killed(stage, tmp_path):
    pidfile = tmp_path / "pid"
    launcher = textwrap.dedent(f"""
        import sys, time
        import hardexec
        policy = hardexec.Policy(die_with_parent=True)
        p = hardexec.Popen(["sleep", "300"], policy=policy)
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text() != "", timeout=30)
        program = int(pidfile.read_text())
        assert alive(program)
        proc.kill()  # kill -9: no atexit, no finally: only the kernel can end the program now
        proc.wait()
        assert wait_until(lambda: not alive(program), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_die_with_parent_refuses_when_the_parent_is_already_gone(stage):
    """The check after PR_SET_PDEATHSIG: a stage whose parent is not the expected one stops."""
    policy = Policy(security=SecurityConfig(no_new_privs=True), die_with_parent=True)
    with hardexec.wrap(["true"], policy, report=False) as wrapped:
        argv = [
            arg.replace(f"--die-with-parent={os.getpid()}", "--die-with-parent=1")
            if isinstance(arg, str) else arg
            for arg in wrapped.argv
        ]  # fmt: skip
        assert argv != wrapped.argv
        result = subprocess.run(
            argv, pass_fds=wrapped.pass_fds, env=wrapped.env, capture_output=True, text=True
        )
    assert result.returncode == 125
    assert "die_with_parent failed: [Errno 3]" in result.stderr
    assert "the parent has already exited" in result.stderr


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # gone (reaped while we read)
        return False


@pytest.fixture
def test_parent():
    from hardexec import cgroups as cg

    path = cg.v2_mount() / f"hxtest-edges-{os.getpid()}"
    path.mkdir()
    yield path
    for child in [p for p in path.iterdir() if p.is_dir()]:  # only if a test failed
        (child / "cgroup.kill").write_text("1")
        wait_until(lambda c=child: "populated 0" in (c / "cgroup.events").read_text())
        child.rmdir()
    path.rmdir()


@pytest.mark.parametrize("keep", [False, True])
def test_groups_made_by_a_script_are_cleaned_up_when_it_exits(stage, test_parent, tmp_path, keep):
    pidfile = tmp_path / "daemon"
    script = textwrap.dedent(f"""
        import hardexec
        policy = hardexec.Policy(
            cgroups=hardexec.CgroupLimits(keep_at_exit={keep}), cgroup_parent={str(test_parent)!r}
        )
        daemon = "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}"
        hardexec.run(["sh", "-c", daemon], policy=policy)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    daemon = int(pidfile.read_text())
    groups = [p for p in test_parent.iterdir() if p.is_dir()]
    try:
        if keep:
            assert alive(daemon) and len(groups) == 1  # left alone, as asked
        else:
            assert wait_until(lambda: not alive(daemon), timeout=5)
            assert groups == []
    finally:
        if alive(daemon):
            os.kill(daemon, signal.SIGKILL)
        for group in groups:
            wait_until(lambda g=group: "populated 0" in (g / "cgroup.events").read_text())
            group.rmdir()


def test_async_kill_tree_keeps_the_exit_status(stage, test_parent):
    """kill_tree must not reap behind asyncio's back (it then reports 255, not -9)."""
    policy = Policy(cgroups=CgroupLimits(), cgroup_parent=test_parent)

    async def main():
        statuses = []
        for _ in range(5):
            proc = await hardexec.create_subprocess_exec("sleep", "300", policy=policy)
            proc.kill_tree()
            # Let the kill land (the program is a zombie now), then kill again, as a caller
            # cleaning up might: the second call must not reap it either.
            assert await asyncio.to_thread(wait_until, lambda p=proc.pid: zombie(p), 5)
            proc.kill_tree()
            statuses.append(await proc.wait())
        return statuses

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asyncio.run(main()) == [-signal.SIGKILL] * 5


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:  # gone (reaped while we read)
        return True


def test_bad_identity_input_is_refused_not_reinterpreted():
    for value, message in (("\u0661", "not a name or an ASCII number"), ("nob\0dy", "NUL byte")):
        with pytest.raises(PolicyError, match=message) as err:
            SecurityConfig(user=value)
        assert "security.user" in str(err.value)
    with pytest.raises(PolicyError, match="security.keep_caps"):
        SecurityConfig(drop_all_caps=True, keep_caps=["\u0661\u0662"])


def test_cpu_fractions_the_kernel_cannot_express_are_policy_errors():
    for cpus in (float("inf"), 1e308, float("nan")):
        with pytest.raises(PolicyError, match="cgroups.cpu"):
            hardexec.CpuMax.from_fraction(cpus)


def test_an_overlong_cgroup_parent_is_a_policy_error():
    with pytest.raises(PolicyError, match="cgroup_parent: .*File name too long") as err:
        Policy(cgroups=CgroupLimits(), cgroup_parent="/" + "x" * 5000)
    assert len(str(err.value)) < 300  # the value is shortened, not printed whole


def test_the_warning_says_the_program_runs_without_the_limits(stage, monkeypatch):
    from hardexec import cgroups as cg

    def refuse(*_args, **_kwargs):
        raise hardexec.CgroupError(errno.EOPNOTSUPP, "the memory controller is not available")

    monkeypatch.setattr(cg.Cgroup, "create", refuse)
    policy = Policy(cgroups=CgroupLimits(memory=64 << 20))
    with pytest.warns(hardexec.StageWarning) as record:
        hardexec.run(["true"], policy=policy)
    message = str(record[0].message)
    assert "the program runs without its cgroup limits (memory.max=67108864)" in message
    assert "memory controller is not available" in message


def test_timings_are_not_asserted_here():
    """Placeholder guard: this module must not compare durations (machines are shared)."""
    source = Path(__file__).read_text()
    assert "time.monotonic() -" not in source.replace('"time.monotonic() -"', "")
    assert time  # imported for wait loops only


@pytest.mark.parametrize("extra", [[], ["--usage"]], ids=["exec", "supervised"])
def test_the_command_refuses_when_root_would_regain_every_capability(stage, extra):
    """The issue's reproduction: under setpriv without CAP_SETPCAP, this exited 0 and the
    program held 000001fffefffeff. Now: exit 125 and the reason, in both modes."""
    result = subprocess.run(
        ["setpriv", "--bounding-set=-setpcap", sys.executable, "-m", "hardexec", "run", *extra,
         "--drop-all-caps", "--keep-cap", "net_bind_service", "--", "grep", "Cap",
         "/proc/self/status"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 125, result
    assert result.stdout == ""
    assert "no CAP_SETPCAP: root would regain every capability at exec" in result.stderr
    assert len(result.stderr.splitlines()) == 1


# --- found by attacking the first version of these fixes ------------------------------------

COMMAND = str(Path(sys.executable).with_name("hardexec"))  # the installed command, as users run it


@pytest.fixture
def command():
    if not os.access(COMMAND, os.X_OK):
        pytest.fail(f"the hardexec command is not installed next to {sys.executable}")
    return COMMAND


@pytest.mark.parametrize("mode", [[], ["--usage"]], ids=["exec", "supervised"])
def test_the_command_runs_none_of_the_programs_python_variables(command, mode, public_dir):
    """hardexec is Python and runs as root: PYTHONPATH is the program's, and a sitecustomize.py
    on it must run in the program (as nobody), never in hardexec (as root)."""
    lib = public_dir / f"pylib-{len(mode)}"
    lib.mkdir(exist_ok=True)
    seen = lib / "seen"
    (lib / "sitecustomize.py").write_text(
        f"import os\nopen({str(seen)!r}, 'a').write('uid=%d\\n' % os.getuid())\n"
    )
    os.chmod(lib, 0o777)
    result = subprocess.run(
        [command, "run", *mode, "--user", "nobody", "--drop-all-caps", "--no-new-privs", "--",
         "/usr/bin/python3", "-c", "pass"],
        env={**os.environ, "PYTHONPATH": str(lib)}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "uid=65534\n"  # the program's interpreter only


@pytest.mark.parametrize("mode", [[], ["--usage"]], ids=["exec", "supervised"])
def test_the_command_passes_the_environment_on_unchanged(command, mode, tmp_path):
    """No LC_CTYPE from CPython's C-locale coercion in hardexec's own interpreter."""
    for env in ({"PWD": str(tmp_path)}, {"PWD": str(tmp_path), "LC_CTYPE": "C", "LANG": "C"}):
        result = subprocess.run(
            [command, "run", *mode, "--", "/usr/bin/env"], env=env, cwd=tmp_path,
            capture_output=True, text=True,
        )  # fmt: skip
        assert sorted(result.stdout.splitlines()) == sorted(f"{k}={v}" for k, v in env.items())


def test_a_forked_child_leaves_its_parents_groups_alone(stage, tmp_path):
    script = textwrap.dedent("""
        import os, sys
        import hardexec
        policy = hardexec.Policy(cgroups=hardexec.CgroupLimits())
        p = hardexec.Popen(["sleep", "30"], policy=policy)
        child = os.fork()
        if child == 0:
            sys.exit(0)  # a normal exit: atexit handlers run in the child
        os.waitpid(child, 0)
        print("after the child:", p.poll(), p.cgroup.path.exists())
        p.kill_tree()
        print("killed:", p.wait())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.splitlines() == ["after the child: None True", "killed: -9"], result


@contextlib.contextmanager
def in_own_session(argv, **kwargs):
    """A command in a session of its own (a signal to its group reaches nothing of the test's),
    with a text stdout pipe; ended by pid and reaped whatever the test did."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def test_signals_hardexec_does_not_handle_itself_are_forwarded(command):
    """SIGALRM (and the like) used to kill a supervising hardexec, leaving its tree behind."""
    program = (
        "import signal, sys\n"
        # os.write, not print: a handler that prints can land inside print('ready')'s own flush
        # ("reentrant call inside BufferedWriter"), which this test's reading cannot exclude.
        "import os\n"
        "signal.signal(signal.SIGALRM, lambda *a: (os.write(1, b'alrm\\n'), sys.exit(3)))\n"
        "print('ready', flush=True)\n"
        "signal.pause()\n"
    )
    with in_own_session(
        [command, "run", "--cgroup", "--", "/usr/bin/python3", "-I", "-c", program]
    ) as proc:
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGALRM)
        assert proc.stdout.readline() == "alrm\n"
        assert proc.wait(timeout=30) == 3


def test_without_a_terminal_a_stopped_program_does_not_stop_hardexec(command, tmp_path):
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; kill -STOP $$; echo continued"
    argv = [command, "run", "--usage", "--", "sh", "-c", script]
    with in_own_session(argv, stderr=subprocess.DEVNULL) as proc:
        assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        program = int(pidfile.read_text())
        assert wait_until(lambda: state(program) == "T")
        os.kill(program, signal.SIGCONT)  # someone continues the program, not hardexec
        assert proc.stdout.read() == "continued\n"
        assert proc.wait(timeout=30) == 0


def state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_messages_never_land_on_stdout_when_stderr_is_closed(command):
    result = subprocess.run(
        ["sh", "-c", f"{command} run --usage -- true 2>&-; {command} run -- no-such-program 2>&-"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.stdout == ""


def test_a_group_the_program_made_inside_its_own_is_removed_too(command):
    from hardexec import cgroups as cg

    mount = cg.v2_mount()
    script = f"mkdir {mount}$(sed -n 's/^0:://p' /proc/self/cgroup)/sub && echo made"
    result = subprocess.run(
        [command, "run", "--cgroup", "--", "sh", "-c", script], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "made\n", "")
    # the leak check (no hardexec-* group left) is the rest of the assertion


def test_identity_keywords_are_checked_like_subprocess_and_compared_by_id(stage):
    policy = Policy(security=SecurityConfig(no_new_privs=True, user="nobody"))
    with pytest.raises(ValueError, match="Groups must be a list, not a string"):
        hardexec.run(["true"], policy=policy, extra_groups="27")
    same = hardexec.run(["id", "-u"], policy=policy, user=65534, capture_output=True, text=True)
    assert same.stdout == "65534\n"  # the same account by number: no conflict


def test_records_support_copy_replace_and_refuse_bytes_paths():
    policy = Policy()
    assert policy.__replace__(die_with_parent=True) == Policy(die_with_parent=True)
    with pytest.raises(PolicyError, match="cgroup_parent: expected a str path"):
        Policy(cgroups=CgroupLimits(), cgroup_parent=b"/sys/fs/cgroup")


def test_out_of_range_ids_raise_what_subprocess_raises():
    policy = Policy(security=SecurityConfig(no_new_privs=True))
    for name in ("user", "group"):
        with pytest.raises(OverflowError):
            subprocess.run(["true"], **{name: 2**64})
        with pytest.raises(OverflowError):
            hardexec.run(["true"], policy=policy, **{name: 2**64})
        with pytest.raises(ValueError):
            hardexec.run(["true"], policy=policy, **{name: -1})


def test_a_signal_to_hardexec_reaches_the_program_not_its_children(command, tmp_path):
    """kill(1) on hardexec means the program, as kill(1) on the program would: its helper
    children (same process group) are not signalled too."""
    pidfile = tmp_path / "child"
    script = f"trap 'echo got ALRM' ALRM; sleep 30 & echo $! > {pidfile}; echo ready; wait; wait"
    with in_own_session([command, "run", "--cgroup", "--", "sh", "-c", script]) as proc:
        assert proc.stdout.readline() == "ready\n"
        child = int(pidfile.read_text())
        os.kill(proc.pid, signal.SIGALRM)
        assert proc.stdout.readline() == "got ALRM\n"
        assert alive(child)  # the default action of SIGALRM would have ended it
        os.kill(child, signal.SIGKILL)
        assert proc.wait(timeout=30) == 0


def test_the_command_runs_nothing_from_the_callers_path_even_through_a_link(command, tmp_path):
    """The PATH is the program's: a readlink or dirname on it must not run as root when the
    command is reached through a symlink (how pipx and /usr/local/bin links install it)."""
    evil = tmp_path / "evil"
    evil.mkdir()
    log = tmp_path / "ran"
    for tool in ("readlink", "dirname", "cat", "sed"):
        (evil / tool).write_text(f"#!/bin/sh\necho {tool} >> {log}\nexit 1\n")
        (evil / tool).chmod(0o755)
    links = tmp_path / "links"
    links.mkdir()
    (links / "hardexec").symlink_to(command)
    result = subprocess.run(
        [str(links / "hardexec"), "run", "--no-new-privs", "--", "/bin/echo", "ran"],
        env={**os.environ, "PATH": f"{evil}:{os.environ['PATH']}"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "ran\n"), result.stderr
    assert not log.exists()


def test_the_inner_script_run_directly_passes_the_environment_on_unchanged(command, tmp_path):
    main = Path(command).with_name("hardexec-main")
    env = {"PWD": str(tmp_path), "LANG": "C"}
    result = subprocess.run(
        [str(main), "run", "--", "/usr/bin/env"], env=env, cwd=tmp_path,
        capture_output=True, text=True,
    )  # fmt: skip
    assert sorted(result.stdout.splitlines()) == sorted(f"{k}={v}" for k, v in env.items())


def test_the_command_passes_even_odd_environment_entries_on(command, tmp_path):
    """The compiled front (not a shell) starts hardexec: names a shell could not hold reach
    the program too, in both modes."""
    assert Path(command).read_bytes()[:4] == b"\x7fELF", "the compiled front is not installed"
    env = {"FOO-BAR": "1", "a.b": "c", "1X": "2", "PWD": str(tmp_path)}
    for mode in ([], ["--usage"]):
        result = subprocess.run(
            [command, "run", *mode, "--", "/usr/bin/env"], env=env, cwd=tmp_path,
            capture_output=True, text=True,
        )  # fmt: skip
        assert sorted(result.stdout.splitlines()) == sorted(f"{k}={v}" for k, v in env.items())
