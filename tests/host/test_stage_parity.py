"""The native stage and its pure-Python twin behave identically, byte for byte.

Each case runs both stages directly (no parent library in between) and compares exit status,
stdout and stderr, with and without a report pipe.
"""

import os
import subprocess
import sys

import pytest

from hardexec.stage import NATIVE_STAGE, TWIN_STAGE, native_available

STAGES = {
    "native": [str(NATIVE_STAGE)],
    "python": [sys.executable, "-I", "-S", str(TWIN_STAGE)],
}

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
    "groups-empty-item": ["--groups=1,,2", "--", "true"],
    "groups-trailing-comma": ["--groups=1,", "--", "true"],
    "groups-empty": ["--groups=", "--", "true"],
    "caps-17-digits": ["--drop-caps=12345678901234567", "--", "true"],
    "caps-0x": ["--drop-caps=0x400", "--", "true"],
    "caps-not-hex": ["--drop-caps=xyz", "--", "true"],
    "caps-empty": ["--drop-caps=", "--", "true"],
    "bad-report-fd": ["--report-fd=999", "--", "true"],
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


def run_stage(command, args, with_report):
    if not with_report:
        result = subprocess.run([*command, *args], capture_output=True)
        return result.returncode, result.stdout, result.stderr, b""
    read_end, write_end = os.pipe()
    try:
        fd_args = [f"--report-fd={write_end}", *args]
        proc = subprocess.Popen(
            [*command, *fd_args],
            pass_fds=[write_end],
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
def test_native_and_twin_agree(args, with_report):
    if not native_available():
        pytest.fail("the native exec stage was not built")
    native = run_stage(STAGES["native"], args, with_report)
    twin = run_stage(STAGES["python"], args, with_report)
    assert native == twin
    assert native[0] in (0, 125, 126, 127)
