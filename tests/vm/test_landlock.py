"""Landlock on an older kernel: the VM's (Debian's 6.1, Landlock ABI 2).

ABI 2 restricts files (read, write, execute, directories, reparenting) but not truncate(2), not
ioctl on devices (ABI 3 and 5) and not TCP (ABI 4). hardexec fails closed on what the kernel
cannot restrict: the run is refused before anything is spawned (a StageError naming it), unless
the confinement is best effort, which then runs with what the kernel enforces and a StageWarning
naming the rest. These tests check that on the real kernel, not a monkeypatched ABI (the host
tier does that on its newer kernel), and that it says true things: what it calls unenforced is.

Runs inside the VM (see conftest.py); on the host each test reports its outcome in the VM.
Every assertion message carries :func:`kernel`, what this kernel offers.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

import hardexec
from hardexec import Confinement, Policy, StageError, StageWarning
from hardexec.confine import landlock
from hardexec.stage import NATIVE_STAGE, TWIN_STAGE

PYTHON = "/usr/bin/python3"
HARDEXEC = [sys.executable, "-m", "hardexec", "run"]
TIMEOUT = 120  # seconds, under software emulation
# The first Landlock ABI of each kernel release (Documentation/userspace-api/landlock.rst).
ABI_SINCE = ((5, 13, 1), (5, 19, 2), (6, 2, 3), (6, 7, 4), (6, 10, 5), (6, 12, 6), (6, 15, 7))
# What an ABI-2 kernel's refusals and warnings name: the rights of ABI 3, 4 and 5.
PATH_WORDS = "truncate, ioctl on devices"
TCP_WORDS = "TCP bind, TCP connect"


def lsms() -> list[str]:
    """The kernel's active LSMs, in order (securityfs)."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            return f.read().strip().split(",")
    except OSError as err:
        return [f"<unreadable: {err}>"]


def kernel() -> str:
    """What this kernel offers, for assertion messages."""
    return f"kernel {os.uname().release}, Landlock ABI {landlock.abi()}, LSMs {','.join(lsms())}"


def expected_abi() -> int:
    """The ABI the running kernel's release and boot LSM list say it has."""
    if "landlock" not in lsms():
        return 0  # built in but not enabled at boot (lsm=), or not built in: disabled
    release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    return max((abi for *since, abi in ABI_SINCE if release >= tuple(since)), default=0)


def run(argv, confinement: Confinement) -> hardexec.CompletedProcess:
    return hardexec.run(
        argv,
        policy=Policy(confinement=confinement),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture
def files(tmp_path):
    """``data/file`` ("hello"), ``secret`` ("secret") beside ``data``, and ``rw/`` for markers."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("hello\n")
    (tmp_path / "secret").write_text("secret\n")
    (tmp_path / "rw").mkdir()
    return tmp_path


def test_the_kernel_offers_the_abi_its_release_and_lsm_list_say():
    """This file is about an ABI below 4 (no TCP) and below 3 (no truncate): check which."""
    assert landlock.abi() == expected_abi(), kernel()
    assert 0 <= landlock.abi() < 3, f"the VM tier expects an old kernel: {kernel()}"


# --- TCP rules: ABI 4, so never on this kernel ------------------------------------------------


def test_a_tcp_rule_is_refused_before_anything_runs(stage, files):
    marker = files / "rw" / "ran"
    with pytest.raises(StageError) as caught:
        run(["sh", "-c", f": > {marker}"], Confinement(tcp_bind=[8080]))
    err = caught.value
    assert (err.step, err.errno) == ("landlock", errno.EOPNOTSUPP), kernel()
    if landlock.abi():
        assert str(err) == (
            "landlock failed: [Errno 95] Operation not supported (Landlock rules for "
            f"{TCP_WORDS}: cannot be enforced here, this kernel's Landlock ABI is "
            f"{landlock.abi()} (best_effort=True runs without it))"
        ), kernel()
    else:
        assert "this kernel has no Landlock" in str(err), kernel()
    assert not marker.exists(), f"the program ran: {kernel()}"


def test_a_tcp_rule_with_best_effort_runs_unconfined_and_warns(stage):
    code = (
        "import socket\n"
        "for port in (8080, 8081):\n"
        "    s = socket.socket()\n"
        "    s.bind(('127.0.0.1', port))\n"
        "    print('bound', port)\n"
    )
    confinement = Confinement(tcp_bind=[8080], best_effort=True)
    with pytest.warns(StageWarning) as record:
        result = run([PYTHON, "-I", "-c", code], confinement)
    assert (result.returncode, result.stderr) == (0, ""), kernel()
    assert result.stdout == "bound 8080\nbound 8081\n", kernel()  # 8081 too: nothing enforced
    [warning] = result.stage_warnings
    assert [str(w.message) for w in record] == [str(warning)]
    assert warning.step == "landlock", kernel()
    if landlock.abi():
        assert str(warning) == (
            f"landlock failed: [Errno 95] Operation not supported (Landlock rules for "
            f"{TCP_WORDS}: not enforced, this kernel's Landlock ABI is {landlock.abi()})"
        ), kernel()
    else:
        assert "this kernel has no Landlock" in str(warning), kernel()


def test_the_command_line_refuses_a_tcp_rule_naming_it_and_the_way_out(stage, files):
    marker = files / "rw" / "ran"
    for mode in ([], ["--timeout", "100s"]):  # exec'd by the CLI, and supervised
        done = subprocess.run(
            [*HARDEXEC, *mode, "--tcp-connect", "443", "--", "sh", "-c", f": > {marker}"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 125, (done, kernel())
        assert done.stdout == "" and done.stderr.count("\n") == 1, (done, kernel())
        assert done.stderr.startswith("hardexec: landlock failed: [Errno 95]"), kernel()
        assert "--best-effort" in done.stderr, kernel()
        if landlock.abi():
            assert TCP_WORDS in done.stderr, kernel()
        assert not marker.exists(), kernel()


# --- path rules: enforced, but not truncate nor device ioctl ------------------------------------


def test_a_path_rule_is_refused_before_anything_runs(stage, files):
    """Even a rule that would let the program write its marker: nothing is spawned."""
    marker = files / "rw" / "ran"
    with pytest.raises(StageError) as caught:
        run(["sh", "-c", f": > {marker}"], Confinement(fs=[(files / "rw", "rw")]))
    err = caught.value
    assert (err.step, err.errno) == ("landlock", errno.EOPNOTSUPP), kernel()
    if landlock.abi():
        assert f"Landlock rules for {PATH_WORDS}: cannot be enforced here" in str(err), kernel()
        assert f"this kernel's Landlock ABI is {landlock.abi()}" in str(err), kernel()
    else:
        assert "the Landlock rules: cannot be enforced here, this kernel has no Landlock" in str(
            err
        ), kernel()
    assert not marker.exists(), kernel()


def test_a_path_rule_with_best_effort_still_confines_files(stage, files):
    confinement = Confinement(fs=[(files / "data", "ro")], best_effort=True)
    with pytest.warns(StageWarning) as record:
        result = run(["cat", files / "data" / "file", files / "secret"], confinement)
    [warning] = result.stage_warnings
    assert [str(w.message) for w in record] == [str(warning)]
    assert warning.step == "landlock"
    if landlock.abi():
        assert (result.returncode, result.stdout) == (1, "hello\n"), (result, kernel())
        assert result.stderr == f"cat: {files / 'secret'}: Permission denied\n", kernel()
        assert f"Landlock rules for {PATH_WORDS}: not enforced" in str(warning), kernel()
    else:  # nothing at all was enforced, as the warning says
        assert (result.returncode, result.stdout) == (0, "hello\nsecret\n"), kernel()
        assert "this kernel has no Landlock" in str(warning), kernel()


def test_what_best_effort_calls_unenforced_is_truncate(stage, files):
    """The warning is true: under a read-only rule the program cannot open the file to write,
    but truncate(2) empties it all the same, since ABI 2 does not restrict truncation."""
    target = files / "data" / "file"
    stdlib = subprocess.run(
        [PYTHON, "-I", "-S", "-c", "import os; print(os.path.dirname(os.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    code = (
        "import os, sys\n"
        "try:\n"
        "    open(sys.argv[1], 'w')\n"
        "except PermissionError:\n"
        "    print('open for writing: denied')\n"
        "os.truncate(sys.argv[1], 0)\n"
        "print('truncated')\n"
    )
    confinement = Confinement(fs=[(files / "data", "ro"), (stdlib, "ro")], best_effort=True)
    with pytest.warns(StageWarning, match="truncate"):
        result = run([PYTHON, "-I", "-S", "-c", code, target], confinement)
    assert result.returncode == 0, (result, kernel())
    if landlock.abi():
        assert result.stdout == "open for writing: denied\ntruncated\n", (result, kernel())
    else:
        assert result.stdout == "truncated\n", (result, kernel())
    assert target.read_text() == "", kernel()


def test_best_effort_with_files_and_ports_names_everything_it_leaves_out(stage, files):
    confinement = Confinement(fs=[(files / "data", "ro")], tcp_connect=[443], best_effort=True)
    with pytest.warns(StageWarning):
        result = run(["cat", files / "data" / "file", files / "secret"], confinement)
    [warning] = result.stage_warnings
    if landlock.abi():
        assert f"Landlock rules for {PATH_WORDS}, {TCP_WORDS}: not enforced" in str(warning), (
            kernel()
        )
        assert result.stdout == "hello\n" and result.returncode == 1, (result, kernel())
    else:
        assert "this kernel has no Landlock" in str(warning), kernel()


def test_the_command_line_with_best_effort_warns_once_and_confines(stage, files):
    cat = ["cat", str(files / "data" / "file"), str(files / "secret")]
    done = subprocess.run(
        [*HARDEXEC, "--best-effort", "--fs-ro", str(files / "data"), "--", *cat],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    warning, *rest = done.stderr.splitlines()
    assert warning.startswith("hardexec: warning: landlock failed: [Errno 95]"), (done, kernel())
    if landlock.abi():
        assert PATH_WORDS in warning, kernel()
        assert (done.returncode, done.stdout) == (1, "hello\n"), (done, kernel())
        assert rest == [f"cat: {files / 'secret'}: Permission denied"], (done, kernel())
    else:
        assert (done.returncode, done.stdout, rest) == (0, "hello\nsecret\n", []), kernel()


# --- the stage itself, on rights this kernel does not know --------------------------------------

STAGES = {"native": [NATIVE_STAGE], "twin": [sys.executable, "-I", "-S", TWIN_STAGE]}
# (blob, what the kernel says to landlock_create_ruleset on ABI 2)
BLOBS = {
    # ABI 5's filesystem rights: unknown bits
    "fs-abi-5": (b"fs=ffff\0path=d:/usr\0", errno.EINVAL),
    # the 16-byte attribute with network rights: bytes past the ABI-1 struct must be zero
    "net": (b"fs=1fff\0net=3\0path=d:/usr\0port=1:8080\0", errno.E2BIG),
    # ABI 6's scopes: the 24-byte attribute, its last 8 bytes not zero
    "scope": (b"fs=1fff\0scope=3\0path=d:/usr\0", errno.E2BIG),
    "nothing-handled": (b"fs=0\0", errno.ENOMSG),
}


@pytest.mark.parametrize("blob", list(BLOBS))
def test_the_stage_fails_closed_on_rights_this_kernel_lacks(blob):
    """The parent never asks this (it fits the ruleset to the ABI); the stage must still refuse,
    both stages alike, rather than run unconfined."""
    if not landlock.abi():
        pytest.skip(f"no Landlock here: every ruleset fails the same way ({kernel()})")
    data, code = BLOBS[blob]
    outcomes = {}
    for name, command in STAGES.items():
        fd = os.memfd_create("rules", 0)
        try:
            os.write(fd, data)
            done = subprocess.run(
                [*command, f"--landlock-fd={fd}", "--nnp", "--", "echo", "ran"],
                capture_output=True,
                pass_fds=(fd,),
                timeout=TIMEOUT,
            )
        finally:
            os.close(fd)
        outcomes[name] = (done.returncode, done.stdout, done.stderr)
    expected = f"hardexec: landlock failed: [Errno {code}] {os.strerror(code)}\n".encode()
    assert outcomes == dict.fromkeys(STAGES, (125, b"", expected)), kernel()


def test_the_parent_fits_the_ruleset_to_this_kernel(files):
    """What the parent sends instead: the rights of ABI 2 only, the 8-byte attribute (no net=);
    the best-effort tests above show the stage applying it."""
    ruleset = landlock.compile_rules(Confinement(fs=[(files / "data", "ro")]))
    assert ruleset is not None and ruleset.abi == landlock.abi(), kernel()
    if not landlock.abi():
        assert ruleset.is_empty(), kernel()
        return
    assert ruleset.handled_fs == landlock.fs_rights(2) == (1 << 14) - 1, kernel()
    assert ruleset.handled_net == 0 and ruleset.unenforced == ("truncate", "ioctl on devices")
    assert ruleset.blob().startswith(b"fs=3fff\0path=c:"), ruleset.blob()
