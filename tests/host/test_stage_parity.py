"""The native stage and its pure-Python twin behave identically, byte for byte.

Each case runs both stages directly (no parent library in between) and compares exit status,
stdout and stderr, with and without a report pipe.
"""

import array
import ast
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardexec.stage import NATIVE_STAGE, TWIN_STAGE, native_available

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "hardexec" / "stage" / "stage.c"
TWIN = [sys.executable, "-I", "-S", str(TWIN_STAGE)]


@pytest.fixture(scope="module")
def libc_stage(tmp_path_factory):
    """stage.c built against the C library: the build other platforms get, tested here too."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the C-library variant of the stage")
    out = tmp_path_factory.mktemp("stage") / "hardexec-stage-libc"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)], check=True
    )
    return [str(out)]


@pytest.fixture(params=["installed", "libc"])
def native(request):
    """The stage the install built (freestanding here), and the C-library build."""
    if request.param == "libc":
        return request.getfixturevalue("libc_stage")
    if not native_available():
        pytest.fail("the native exec stage was not built")
    return [str(NATIVE_STAGE)]


CASES = {
    "nothing": [],
    "no-program": ["--"],
    "no-separator": ["--nnp", "true"],
    "unknown-option": ["--bogus", "--", "true"],
    "option-without-value": ["--uid", "--", "true"],
    "uid-minus-one": ["--uid=4294967295", "--", "true"],
    "uid-too-big": ["--uid=4294967296", "--", "true"],
    "uid-signed": ["--uid=-1", "--", "true"],
    "uid-plus": ["--uid=+1", "--", "true"],
    "uid-blank": ["--uid= 1", "--", "true"],
    "uid-hex": ["--uid=0x10", "--", "true"],
    "uid-empty": ["--uid=", "--", "true"],
    "groups-in-argv": ["--groups=1,2", "--", "true"],  # only by fd now
    "groups-fd": [
        "--uid=65534",
        "--gid=65534",
        "--groups-fd={groups}",
        "--",
        "grep",
        "^Groups",
        "/proc/self/status",
    ],
    "groups-fd-odd-size": ["--groups-fd={odd}", "--", "true"],
    "groups-fd-minus-one": ["--groups-fd={minus_one}", "--", "true"],
    "groups-fd-closed": ["--groups-fd=99", "--", "true"],
    "groups-fd-then-clear": ["--groups-fd={groups}", "--clear-groups", "--", "true"],
    "env-fd": ["--env-fd={env}", "--", "env"],
    "env-fd-path-search": ["--env-fd={env}", "--", "env"],
    "env-fd-empty": ["--env-fd={empty}", "--", "/usr/bin/env"],
    "env-fd-unterminated": ["--env-fd={odd}", "--", "true"],
    "env-fd-closed": ["--env-fd=99", "--", "true"],
    "ignore-signals": ["--ignore-signals=1,13,25", "--", "grep", "^SigIgn", "/proc/self/status"],
    "ignore-signals-kill": ["--ignore-signals=9", "--", "true"],
    "ignore-signals-zero": ["--ignore-signals=0", "--", "true"],
    "ignore-signals-65": ["--ignore-signals=65", "--", "true"],
    "ignore-signals-empty-item": ["--ignore-signals=1,,2", "--", "true"],
    "die-with-parent": ["--die-with-parent={parent}", "--", "echo", "ran"],
    "die-with-parent-gone": ["--die-with-parent=1", "--", "echo", "ran"],
    "die-with-parent-zero": ["--die-with-parent=0", "--", "true"],
    "exec-empty-name": ["--exec=", "--", "true"],
    "exec-searched-on-path": ["--exec=echo", "--", "x", "hi"],
    "caps-17-digits": ["--drop-caps=12345678901234567", "--", "true"],
    "caps-0x": ["--drop-caps=0x400", "--", "true"],
    "caps-not-hex": ["--drop-caps=xyz", "--", "true"],
    "caps-empty": ["--drop-caps=", "--", "true"],
    "bad-report-fd": ["--report-fd=999", "--", "true"],
    "rlimits": [
        "--rlimit=7:64",
        "--rlimit=4:0",
        "--rlimit=1:4096",
        "--",
        "sh",
        "-c",
        "ulimit -Sn; ulimit -Hn; ulimit -c; ulimit -Hf",
    ],
    "rlimit-above-hard": ["--rlimit=7:9223372036854775807", "--", "sh", "-c", "ulimit -Hn"],
    "rlimit-bad-resource": ["--rlimit=16:1", "--", "true"],
    "rlimit-no-colon": ["--rlimit=7", "--", "true"],
    "rlimit-negative": ["--rlimit=7:-1", "--", "true"],
    "rlimit-too-big": ["--rlimit=7:9223372036854775808", "--", "true"],
    "rlimit-17-times": [*["--rlimit=7:64"] * 17, "--", "true"],
    "cgroup-bad-fd": ["--cgroup-fd=99", "--", "echo", "ran"],
    "cgroup-bad-fd-strict": ["--cgroup-fd=99", "--cgroup-strict", "--", "echo", "ran"],
    "cgroup-fd-not-a-number": ["--cgroup-fd=x", "--", "true"],
    "not-found": ["--nnp", "--", "no-such-program-x"],
    "not-executable": ["--nnp", "--exec=/etc/passwd", "--", "x"],
    "exec-directory": ["--nnp", "--", "/tmp"],
    "missing-cap-warns": ["--drop-caps=0000000001000400", "--", "echo", "ran"],
    "missing-cap-strict": ["--drop-caps=0000000001000400", "--strict", "--", "echo", "ran"],
    "every-bit-as-nobody": [
        "--uid=65534",
        "--gid=65534",
        "--clear-groups",
        "--drop-caps=ffffffffffffffff",
        "--",
        "grep",
        "^Cap",
        "/proc/self/status",
    ],
    "switched-identity": [
        "--uid=65534",
        "--gid=65534",
        "--groups=7,8",
        "--drop-caps=0400",
        "--nnp",
        "--",
        "grep",
        "-E",
        "^(Uid|Gid|Groups|Cap|NoNewPrivs)",
        "/proc/self/status",
    ],
}


# memfd contents the cases refer to as {name}
MEMFDS = {
    "groups": array.array("I", [7, 8]).tobytes(),
    "odd": b"\x01\x02\x03",
    "minus_one": array.array("I", [5, 0xFFFFFFFF]).tobytes(),
    "env": b"A=1\0PATH=/usr/bin:/bin\0B=two words\0",
    "empty": b"",
}


@contextlib.contextmanager
def memfds():
    fds = {}
    try:
        for name, data in MEMFDS.items():
            fds[name] = os.memfd_create(name, 0)
            os.write(fds[name], data)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def run_stage(command, args, with_report):
    with memfds() as fds:
        args = [arg.format(parent=os.getpid(), **fds) for arg in args]
        return _run_stage(command, args, with_report, tuple(fds.values()))


def _run_stage(command, args, with_report, pass_fds):
    if not with_report:
        result = subprocess.run([*command, *args], capture_output=True, pass_fds=pass_fds)
        return result.returncode, result.stdout, result.stderr, b""
    read_end, write_end = os.pipe()
    try:
        fd_args = [f"--report-fd={write_end}", *args]
        proc = subprocess.Popen(
            [*command, *fd_args],
            pass_fds=[write_end, *pass_fds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as report:
            read_end = -1
            records = report.read()
        out, err = proc.communicate()
        return proc.returncode, out, err, records
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


@pytest.mark.parametrize("with_report", [False, True], ids=["stderr", "report-pipe"])
@pytest.mark.parametrize("args", list(CASES.values()), ids=list(CASES))
def test_native_and_twin_agree(native, args, with_report):
    ours = run_stage(native, args, with_report)
    assert ours == run_stage(TWIN, args, with_report)
    assert ours[0] in (0, 125, 126, 127)


def test_native_and_twin_agree_when_root_would_regain_everything(native):
    """Under setpriv without CAP_SETPCAP, a uid-0 program is refused by both, in the same words."""
    args = ["setpriv", "--bounding-set=-setpcap"]
    case = ["--drop-caps=0400", "--", "true"]
    for with_report in (False, True):
        ours = run_stage([*args, *native], case, with_report)
        assert ours == run_stage([*args, *TWIN], case, with_report)
        assert ours[0] == 125
    stderr = run_stage([*args, *native], case, False)[2].decode()
    assert stderr == (
        "hardexec: bounding_set failed: [Errno 1] Operation not permitted (capability 0): "
        "no CAP_SETPCAP: root would regain every capability at exec\n"
    )


def setup_variants() -> dict[str, tuple[list[str], list[str]]]:
    """The build variants setup.py tries, read from its source (importing it would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VARIANTS":
            names = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
            variants = {}
            for item in node.value.elts:
                name, cflags, ldflags = item.elts
                if isinstance(cflags, ast.Name):
                    cflags = names[cflags.id]
                variants[ast.literal_eval(name)] = (
                    ast.literal_eval(cflags),
                    ast.literal_eval(ldflags),
                )
            return variants
    raise AssertionError("setup.py has no VARIANTS")


@pytest.mark.parametrize("variant", ["freestanding", "libc-static"])
def test_every_build_variant_compiles_warning_free_and_runs(variant, tmp_path):
    """setup.py cannot build with -Werror (other compilers); here, with gcc, we can."""
    cflags, ldflags = setup_variants()[variant]
    out = tmp_path / "stage"
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", *cflags, "-o", str(out), str(SOURCE)]
    subprocess.run([*cmd, *ldflags], check=True)
    result = subprocess.run([str(out), "--drop-caps=400", "--nnp", "--", "true"])
    assert result.returncode == 0
