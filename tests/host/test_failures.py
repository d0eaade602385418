"""Failure semantics: best-effort warnings, strict aborts, always-fatal steps, exec errors."""

import asyncio
import errno
import logging
import os
import subprocess
import warnings

import pytest

import hardexec
from hardexec import Policy, PolicyError, SecurityConfig, StageError, StageWarning
from helpers import parse_status

# This machine's launcher lacks CAP_SYS_RESOURCE (checked below): keeping it cannot work.
MISSING = "SYS_RESOURCE"


def keep_missing(strict: bool) -> Policy:
    return Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=["NET_BIND_SERVICE", MISSING], fail_on_cap_error=strict
        )
    )


@pytest.fixture(autouse=True)
def _launcher_lacks_sys_resource():
    with open("/proc/self/status") as f:
        held = hardexec.CapSet.from_hex(parse_status(f.read())["CapPrm"])
    assert hardexec.Capability.SYS_RESOURCE not in held, "these tests need a launcher without it"


def test_missing_cap_warns_in_best_effort_mode_and_the_program_runs(stage, caplog):
    with pytest.warns(StageWarning) as record, caplog.at_level(logging.WARNING, "hardexec"):
        result = hardexec.run(
            ["cat", "/proc/self/status"], policy=keep_missing(False), capture_output=True, text=True
        )
    assert result.returncode == 0
    status = parse_status(result.stdout)
    assert status["CapEff"] == status["CapBnd"] == "0000000000000400"  # kept ∩ held, nothing else
    [warning] = [w.message for w in record]
    assert (warning.step, warning.errno) == ("keep_caps", errno.EPERM)
    assert "CAP_SYS_RESOURCE" in str(warning)
    assert record[0].filename == __file__  # attributed to the caller's line, not hardexec's
    assert "keep_caps failed" in caplog.text


def test_missing_cap_aborts_in_strict_mode_with_no_child_left(stage):
    with pytest.raises(StageError) as err:
        hardexec.Popen(["sleep", "30"], policy=keep_missing(True), stdout=subprocess.PIPE)
    assert isinstance(err.value, OSError)
    assert (err.value.step, err.value.errno) == ("keep_caps", errno.EPERM)
    assert str(err.value).startswith("keep_caps failed: [Errno 1] Operation not permitted")
    # the autouse leak check asserts no child (running or zombie) and no fd is left


def test_warnings_raised_as_errors_leave_no_child(stage):
    """With warnings as errors the program already runs when the warning raises: end it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", StageWarning)
        with pytest.raises(StageWarning):
            hardexec.Popen(["sleep", "30"], policy=keep_missing(False), stdout=subprocess.PIPE)

        async def spawn():
            await hardexec.create_subprocess_exec(
                "sleep", "30", policy=keep_missing(False), stdout=asyncio.subprocess.PIPE
            )

        with pytest.raises(StageWarning):
            asyncio.run(spawn())
    # the autouse leak check asserts both programs were killed and reaped, pipes closed


def run_under_setpriv(setpriv_args, policy, argv=("true",)):
    """Start the stage from a launcher that setpriv has stripped, via hardexec.wrap()."""
    with hardexec.wrap(list(argv), policy) as wrapped:
        proc = subprocess.Popen(
            ["setpriv", *setpriv_args, *wrapped.argv], pass_fds=wrapped.pass_fds, env=wrapped.env
        )
        wrapped.spawned()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                wrapped.check()
            return [w.message for w in caught]
        finally:
            proc.wait()


def test_bounding_set_failure_for_a_root_program_refuses_even_in_best_effort(stage):
    """Without CAP_SETPCAP the bounding set cannot shrink, and execve would hand a uid-0 program
    every capability left in it: the opposite of the request, so it never runs."""
    policy = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"]))
    with pytest.raises(StageError) as err:
        run_under_setpriv(["--bounding-set=-setpcap"], policy)
    assert (err.value.step, err.value.errno) == ("bounding_set", errno.EPERM)
    assert "no CAP_SETPCAP: root would regain every capability at exec" in str(err.value)
    assert "the launcher lacks CAP_SETPCAP" in str(err.value)
    strict = Policy(security=SecurityConfig(drop_all_caps=True, fail_on_cap_error=True))
    with pytest.raises(StageError) as err:
        run_under_setpriv(["--bounding-set=-setpcap"], strict)
    assert (err.value.step, err.value.errno) == ("bounding_set", errno.EPERM)


def test_bounding_set_failure_warns_when_nothing_can_be_regained(stage, tmp_path):
    """With no_new_privs, execve cannot raise root above the kept permitted set, and a non-root
    program gains nothing from the bounding set: best effort warns and runs."""
    out = tmp_path / "status"
    argv = ("sh", "-c", f"cat /proc/self/status > {out}")
    bounding = ("bounding_set", errno.EPERM)
    for security, expected in (
        # Root: the securebits lock needs CAP_SETPCAP too, and the report says it is missing.
        (
            SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True),
            [bounding, ("securebits", errno.EPERM)],
        ),
        (
            SecurityConfig(drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], user="nobody"),
            [bounding],
        ),
    ):
        found = run_under_setpriv(["--bounding-set=-setpcap"], Policy(security=security), argv)
        assert [(w.step, w.errno) for w in found] == expected
        status = parse_status(out.read_text())
        assert status["CapEff"] == status["CapPrm"] == "0000000000000400"  # nothing regained


def test_identity_failures_always_abort_even_in_best_effort_mode(stage):
    policy = Policy(security=SecurityConfig(user="nobody"))
    with pytest.raises(StageError) as err:
        run_under_setpriv(["--bounding-set=-setgid"], policy)
    assert (err.value.step, err.value.errno) == ("setgroups", errno.EPERM)
    with pytest.raises(StageError) as err:
        run_under_setpriv(["--bounding-set=-setuid"], policy)
    assert (err.value.step, err.value.errno) == ("setresuid", errno.EPERM)


def assert_exec_error_like_subprocess(argv, kind):
    policy = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))
    with pytest.raises(kind) as ours:
        hardexec.run(argv, policy=policy)
    with pytest.raises(kind) as theirs:
        subprocess.run(argv)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


def test_missing_program_is_file_not_found_like_subprocess(stage):
    assert_exec_error_like_subprocess(["no-such-program-x"], FileNotFoundError)


def test_non_executable_program_is_permission_error_like_subprocess(stage, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    os.chmod(script, 0o644)  # no x bit at all: even root's exec fails with EACCES
    assert_exec_error_like_subprocess([str(script)], PermissionError)


def test_path_search_uses_the_programs_environment(stage, tmp_path):
    tool = tmp_path / "only-here"
    tool.write_text("#!/bin/sh\necho found\n")
    os.chmod(tool, 0o755)
    policy = Policy(security=SecurityConfig(no_new_privs=True))
    env = {"PATH": f"/nonexistent:{tmp_path}"}
    result = hardexec.run(["only-here"], policy=policy, env=env, capture_output=True, text=True)
    assert result.stdout == "found\n"
    with pytest.raises(FileNotFoundError):
        hardexec.run(["only-here"], policy=policy, env={"PATH": "/nonexistent"})


def test_policy_errors_come_before_any_spawn():
    for make in (
        lambda: SecurityConfig(drop_all_caps=True, keep_caps=["NOT_A_CAP"]),
        lambda: SecurityConfig(user="no-such-user-x"),
        lambda: SecurityConfig(keep_caps=["CHOWN"]),
    ):
        with pytest.raises(PolicyError):
            make()


def test_popen_identity_arguments_conflict_with_a_policy():
    policy = Policy(security=SecurityConfig(no_new_privs=True, user="nobody"))
    with pytest.raises(PolicyError, match="user='root' conflicts with the policy's security.user"):
        hardexec.Popen(["true"], policy=policy, user="root")
    with pytest.raises(PolicyError, match="extra_groups=\\(1,\\) conflicts"):
        hardexec.Popen(
            ["true"],
            policy=policy.with_security(SecurityConfig(supplementary_groups=[2])),
            extra_groups=[1],
        )
    with pytest.raises(TypeError, match="policy: expected hardexec.Policy"):
        hardexec.run(["true"], policy=SecurityConfig(no_new_privs=True))  # type: ignore[arg-type]


UNPRIVILEGED = """
import warnings
import hardexec
from hardexec import Policy, SecurityConfig
try:
    hardexec.run(["true"], policy=Policy(security=SecurityConfig(user="daemon")))
except hardexec.StageError as err:
    print("error:", err)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    drop = Policy(security=SecurityConfig(drop_all_caps=True, keep_caps=["NET_RAW"]))
    print("status:", hardexec.run(["true"], policy=drop).returncode)
for warning in caught:
    print("warning:", warning.message)
"""


def test_an_unprivileged_launcher_is_told_which_capability_it_lacks(stage):
    """As nobody: an identity change says CAP_SETGID is missing; a drop warns (nothing to regain
    for a non-root program) and says CAP_SETPCAP is missing; a kept cap is not held."""
    src = os.path.dirname(os.path.dirname(hardexec.__file__))
    code = f"import sys; sys.path.insert(0, {src!r})\n" + UNPRIVILEGED
    result = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "/usr/bin/python3", "-I", "-c", code],
        capture_output=True, text=True, env={"HARDEXEC_STAGE": stage, "PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "error: setgroups failed: [Errno 1] Operation not permitted "
        "(the launcher lacks CAP_SETGID)",
        "status: 0",
        "warning: bounding_set failed: [Errno 1] Operation not permitted (dropping CAP_CHOWN "
        "from the bounding set, the first drop that failed; the launcher lacks CAP_SETPCAP; "
        "set-user-ID and file-capability programs it runs can regain what stays in the "
        "bounding set; no_new_privs prevents that)",
        "warning: keep_caps failed: [Errno 1] Operation not permitted "
        "(CAP_NET_RAW is not in the launcher's permitted set)",
    ]
