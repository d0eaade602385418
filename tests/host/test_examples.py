"""Every file in examples/ runs as written and shows what it says; the README and the pages in
docs/ quote them verbatim.

Each example runs as its own process, the way a reader would run it: shell ones with ``sh FILE``,
Python ones with this interpreter. The ``hardexec`` command on PATH is the one next to
``sys.executable`` (else a shim running ``python -m hardexec``), and PYTHONPATH leads to the
hardexec package these tests import, so an example runs the code under test. Each check reads
what the example printed, not only its exit status.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import helpers
from hardexec import cgroups
from hardexec.errors import CgroupError
from helpers import parse_status, process_gone, wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
KEPT = "0000000000000400"  # NET_BIND_SERVICE
CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def run_example(name: str, tmp_path: Path, own_network: bool = False):
    """Run examples/NAME to its end, as a reader would (:func:`helpers.run_example`)."""
    return helpers.run_example(EXAMPLES / name, tmp_path, own_network)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _memory_controller() -> bool:
    """Whether hardexec can give a program memory.max here (in the group it would use)."""
    try:
        parent = cgroups.default_parent()
    except (CgroupError, OSError):
        return False
    controllers = parent / "cgroup.controllers"
    return controllers.is_file() and "memory" in controllers.read_text().split()


# --- what each example must show ------------------------------------------------------------


def check_what_the_program_gets(result) -> None:
    _ok(result)
    status = parse_status(result.stdout)
    assert {name: status.get(name) for name in CAP_SETS} == dict.fromkeys(CAP_SETS, KEPT)
    assert status["NoNewPrivs"] == "1"


def check_unprivileged_user(result) -> None:
    _ok(result)
    status = parse_status(result.stdout)
    assert status["Uid"].split() == ["65534"] * 4
    assert status["Gid"].split() == ["65534"] * 4
    assert {name: status.get(name) for name in CAP_SETS} == dict.fromkeys(CAP_SETS, KEPT)


def check_rlimits(result) -> None:
    _ok(result)
    limits = {line[: line.index("  ")]: line.split()[-3:-1] for line in result.stdout.splitlines()}
    assert limits == {
        "Max file size": ["10485760", "10485760"],
        "Max core file size": ["0", "0"],
        "Max open files": ["1024", "1024"],
    }


def check_cgroup_usage(result) -> None:
    _ok(result)
    assert re.fullmatch(r"0::/(.+/)?hardexec-\d+-[0-9a-f]+-[0-9a-f]+\n", result.stdout)
    assert re.search(r"^hardexec: usage: cpu .* \(from cgroup\)$", result.stderr, re.M)


def check_memory_limit(result) -> None:
    _ok(result)  # the script itself ends with echo
    if _memory_controller():
        assert result.stdout == "exit status 137\n"
        assert "hardexec: killed by the OOM killer (memory.max=64M)" in result.stderr
    else:
        # The ceiling cannot be applied here: a refusal, not a run without it.
        assert result.stdout == "exit status 125\n", result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "memory" in lines[0], result.stderr


def check_caps(result) -> None:
    _ok(result)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\s*0\s+CHOWN\s+\S.*", lines[0])
    assert any(re.fullmatch(r"12\s+NET_ADMIN\s+\S.*", line) for line in lines)
    assert lines[-1] == "NET_ADMIN,NET_RAW"


def check_caps_current(result) -> None:
    _ok(result)
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"pid \d+ \(.+\)", lines[0]), lines
    decoded = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    for name in CAP_SETS:
        assert decoded.get(name) == [KEPT, "NET_BIND_SERVICE"], lines
    assert decoded["NoNewPrivs"] == ["1"]
    assert decoded["Seccomp"] == ["off"]


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none), asked of the kernel directly."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # _VERSION
    return max(version, 0)


def _can_confine_and_kill() -> bool:
    """Whether landlock, seccomp-notify and cgroup-kill are all usable here, found without
    hardexec's own probes: the Landlock ABI, the kernel's seccomp actions, and cgroup.kill in a
    group made (and removed) where a run would make its cgroup."""
    try:
        actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text().split()
        probe = cgroups.default_parent() / f"hardexec-test-examples-{os.getpid()}"
        probe.mkdir()
    except (CgroupError, OSError):
        return False
    try:
        kill = (probe / "cgroup.kill").exists()
    finally:
        probe.rmdir()
    return _landlock_abi() >= 1 and "user_notif" in actions and kill


def check_check(result) -> None:
    _ok(result)
    lines = result.stdout.splitlines()
    report = lines[:-1] if lines[-1].startswith("ready: ") else lines
    labels = [line[:16].strip() for line in report if not line.startswith("  ")]
    assert labels == [
        "kernel",
        "this process",
        "ambient caps",
        "exec stage",
        "landlock",
        "seccomp",
        "cgroup v2",
        *(f"namespace {kind}" for kind in ("user", "net", "pid", "ipc", "uts")),
    ], lines
    assert lines[0].split()[1] == os.uname().release
    landlock = next(line for line in lines if line.startswith("landlock "))
    abi = _landlock_abi()
    assert (f"ABI {abi}:" in landlock) if abi else landlock.split()[1] == "no", landlock
    ready = _can_confine_and_kill()
    assert lines[-1].startswith("ready: ") == ready, (lines[-1], result.stderr)
    if not ready:
        assert "not usable here" in result.stderr


def check_web_server(result) -> None:
    _ok(result)
    assert result.stdout == "client: HTTP 200\n"
    assert '"GET / HTTP/1.1" 200' in result.stderr  # the server's own log of the request


def check_run_and_popen(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        f"CapEff:\t{KEPT}",
        "sleep ended with -15",
        "not found: no-such-program",
    ]


def check_asyncio_exec(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [f"CapAmb:\t{KEPT}", "exit status 0"]


def check_wrap_any_spawner(result) -> None:
    _ok(result)
    assert result.stdout == "CapPrm:\t0000000000000000\n"


def check_ceilings_and_usage(result) -> None:
    _ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == "1024"  # ulimit -n, as the program saw it
    assert lines[1].startswith("usage: Usage(source='cgroup'")
    match = re.fullmatch(r"daemon pid: (\d+)", lines[2])
    assert match, lines
    assert lines[3] == "program killed by signal 9"
    # setsid'd, so only the cgroup reached it: it must be gone (or an unreaped zombie)
    assert wait_until(lambda: process_gone(int(match.group(1)))), "the daemon survived"


def check_runner(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "0 CapEff:\t0000000000000000",
        "hi from __main__",
        "timed out: True signal: 9",
        "4950",
        "stdout 1 a",
        "stdout 2 b",
        "103",
    ]


def check_task_options(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "exit status 124",
        "FOO=bar",
        f"HOME={os.environ['HOME']}",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "PWD=/tmp",
        "/tmp",
        "hello, world",
        '  "exit_code": 0,',
        '    "stdout_bytes": 9,',
    ]
    assert result.stderr.splitlines() == [
        "hardexec: timed out after 1 s: the program's tree was sent SIGTERM, then SIGKILL",
        "hardexec: stdout: 9 bytes over --max-output 13 were dropped",
    ]


def check_confine_files(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "hello from the data directory",
        "cat /etc/passwd was refused (exit 1)",
    ]
    assert "cat: /etc/passwd: Permission denied" in result.stderr.splitlines()


def check_confine_syscalls(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == ["unshare was refused (exit 1)", "socket() was refused"]
    err = result.stderr.splitlines()
    assert "unshare: unshare failed: Operation not permitted" in err
    assert "hardexec: denied syscalls: unshare (1)" in err
    assert "OSError: [Errno 38] Function not implemented" in err  # ENOSYS, not EPERM
    reports = [line for line in err if line.startswith("hardexec: denied syscalls: ")]
    assert len(reports) == 2 and "socket (1)" in reports[1]


def check_confine_tree(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "pid 2 on sandbox, umask 0077",
        "lo:",
        "exit status 3",
        "nothing left running",
    ]


def check_confinement(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "unshare: -1 Operation not permitted",
        "read /etc/hostname: Permission denied",
        "now ptrace, under a kill rule",
        "exit: -9",
        "denied: {'ptrace': 1, 'unshare': 1}",
    ]


def check_policy_files(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        f"CapEff:\t{KEPT}",
        "nobody",
        "hello",
        "64",
        "refused (exit 125)",
    ]
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        r"hardexec: /tmp/\S+/web\.toml: security\.keep_caps\[0\]: unknown capability "
        r"'NET_BIND'; did you mean NET_ADMIN, NET_BIND_SERVICE\?",
        line,
    ), line


def check_profiles(result) -> None:
    _ok(result)
    assert [line.strip() for line in result.stdout.splitlines()] == [
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "lo",
        "unshare was denied (exit 1)",
        "nobody bound port 80",
    ]
    assert "hardexec: denied syscalls: unshare (1)" in result.stderr.splitlines()


def check_explain(result) -> None:
    _ok(result)
    lines = result.stdout.splitlines()
    kept = "->  0000000000000400  NET_BIND_SERVICE"
    for name in CAP_SETS:  # the program's side; hardexec's own depends on how it was started
        [line] = [x for x in lines if x.startswith(f"  {name}  ")]
        assert line.endswith(kept), line
    assert any(x.startswith("  Uid ") and x.endswith("->  65534 65534 65534 65534") for x in lines)
    assert "  RLIMIT_NOFILE  1024" in lines
    assert any(
        re.fullmatch(r"  FAIL    0\.5  caps\.any +holds any capability +NET_BIND_SERVICE", x)
        for x in lines
    )
    assert re.fullmatch(r"overall exposure level: \d+\.\d [A-Z]+", lines[-4]), lines[-4]
    scores = {}
    for line in lines[-3:]:
        name, score, _level = line.split()
        scores[name] = float(score)
    assert scores["none"] == 10.0 and lines[-3] == "none 10.0 UNSAFE"  # unconfined root
    assert 0 < scores["strict"] < scores["service"] < scores["none"]


def check_verify(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "verified: nobody",
        "CapEff: 0000000000002000",  # unverified, the file capability is regained at exec
        "refused (exit 125)",
    ]
    assert (
        "hardexec: verify: the program holds CapPrm 0000000000002000 (NET_RAW), CapEff "
        "0000000000002000 (NET_RAW), CapBnd "
    ) in result.stderr
    assert "it was killed before its first instruction" in result.stderr


def check_learn(result) -> None:
    _ok(result)
    assert result.stdout.splitlines() == [
        "tool: ok",
        "tool: ok",
        "OSError: [Errno 38] Function not implemented",
        "hardexec: denied syscalls: clone (1)",
    ]
    assert re.fullmatch(
        r"hardexec: learned \d+ syscalls, network: yes; wrote /\S+/tool\.toml\n", result.stderr
    ), result.stderr


def check_fleet(result):
    _ok(result)
    out = result.stdout.splitlines()
    # The ceiling as given; exit status 3 came back.
    assert out[:3] == ["CapEff:\t0000000000000400", "NoNewPrivs:\t1", "exit status 3"], out
    # Narrowed: nobody, nothing kept.
    assert out[3:5] == ["nobody", "CapEff:\t0000000000000000"], out
    # Widened: refused with the reason, and the program never ran.
    assert out[5] == "refused (exit 125)", out
    assert "security.keep_caps: SYS_ADMIN is not kept by this worker's ceiling" in result.stderr
    # From Python: the Result, its streams, and usage from the worker's group for the task.
    assert out[6].startswith("'sh' exited with status 0 after "), out
    assert out[7] == "stdout: 64 | stderr: to stderr | usage from cgroup", out


CHECKS: dict[str, Callable[[subprocess.CompletedProcess[str]], None]] = {
    "what_the_program_gets.sh": check_what_the_program_gets,
    "unprivileged_user.sh": check_unprivileged_user,
    "rlimits.sh": check_rlimits,
    "cgroup_usage.sh": check_cgroup_usage,
    "memory_limit.sh": check_memory_limit,
    "caps.sh": check_caps,
    "caps_current.sh": check_caps_current,
    "check.sh": check_check,
    "web_server.sh": check_web_server,
    "run_and_popen.py": check_run_and_popen,
    "asyncio_exec.py": check_asyncio_exec,
    "wrap_any_spawner.py": check_wrap_any_spawner,
    "ceilings_and_usage.py": check_ceilings_and_usage,
    "runner.py": check_runner,
    "task_options.sh": check_task_options,
    "confine_files.sh": check_confine_files,
    "confine_syscalls.sh": check_confine_syscalls,
    "confine_tree.sh": check_confine_tree,
    "confinement.py": check_confinement,
    "policy_files.sh": check_policy_files,
    "profiles.sh": check_profiles,
    "explain.sh": check_explain,
    "verify.sh": check_verify,
    "learn.sh": check_learn,
    "fleet.sh": check_fleet,
}
OWN_NETWORK = {"web_server.sh", "profiles.sh"}  # they bind port 80
NEEDS = {"fleet.sh": "redis-server"}  # a command the example starts (./run-tests installs it)
# Examples run and checked by their own command's tests instead, in the file named.
CHECKED_ELSEWHERE = {"export_k8s.sh": "test_export_cli.py"}


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in EXAMPLES.iterdir() if p.is_file() and p.name not in CHECKED_ELSEWHERE),
)
def test_example_runs_and_shows_what_it_says(name, tmp_path):
    check = CHECKS.get(name)
    assert check is not None, f"examples/{name} has no check in {Path(__file__).name}"
    own_network = name in OWN_NETWORK
    if name in NEEDS and not shutil.which(NEEDS[name]):
        pytest.skip(f"needs {NEEDS[name]} (apt-get install {NEEDS[name]}; ./run-tests does)")
    if own_network and not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs unshare and ip to give the example a loopback of its own")
    check(run_example(name, tmp_path, own_network))


@pytest.mark.parametrize("name", sorted(CHECKED_ELSEWHERE))
def test_an_example_checked_elsewhere_is_run_there(name):
    assert (EXAMPLES / name).is_file()
    assert f'"examples" / "{name}"' in (Path(__file__).parent / CHECKED_ELSEWHERE[name]).read_text()


# --- the README and the documentation pages quote the examples ---------------------------------

DOCS = ROOT / "docs"
DESIGN = DOCS / "design.md"
# The pages whose code blocks are examples a reader runs: each one is a file of examples/, quoted
# verbatim, or says why the tests do not run it. design.md's blocks are diagrams and formats.
PAGES = [README, *sorted(p for p in DOCS.glob("*.md") if p != DESIGN)]
_MARKER = re.compile(r"<!-- (example: examples/(?P<file>\S+)|not run by the tests: .+) -->")


def code_blocks(page: Path) -> list[tuple[str, str, str]]:
    """Each fenced code block of a page: (the marker comment right above it, its info string,
    its text)."""
    blocks, lines = [], page.read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            marker = lines[i - 1].strip() if i > 0 else ""
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append((marker, lines[i][3:].strip(), "".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_is_a_quoted_example_or_says_why_not(page):
    blocks = code_blocks(page)
    assert blocks or page != README
    for marker, _, text in blocks:
        assert _MARKER.fullmatch(marker), (
            f"a code block of {page.name} must follow '<!-- example: examples/FILE -->' (and "
            f"equal that file) or '<!-- not run by the tests: REASON -->'; this one has "
            f"{marker!r}:\n{text}"
        )


def test_every_example_is_quoted_verbatim():
    quoted: dict[str, list[str]] = {}
    for page in PAGES:
        for marker, _, text in code_blocks(page):
            match = _MARKER.fullmatch(marker)
            if match and match["file"]:
                name = match["file"]
                assert text == (EXAMPLES / name).read_text(), (
                    f"{page.name}'s quote of examples/{name} differs from the file"
                )
                quoted.setdefault(name, []).append(page.name)
    files = {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    assert set(quoted) == files, f"not quoted anywhere: {sorted(files - set(quoted))}"


def test_the_design_page_has_no_example_to_run():
    # Its blocks are diagrams and formats; an example belongs in examples/, quoted elsewhere.
    for _, info, text in code_blocks(DESIGN):
        assert info not in {"sh", "bash", "console", "shell", "python", "py"}, text


def test_the_documents_stand_alone():
    readme = README.read_text()
    assert "docs/design.md" in readme and DESIGN.is_file()
    for doc in [README, *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        assert "../" not in text, f"{doc.name} points outside the repository"
        assert not re.search(r"\bthe reference\b", text, re.I), f"{doc.name} says 'the reference'"
