"""The stage command line a policy compiles to, and how the parent reads the stage's report."""

import array
import errno
import os

import pytest

from hardexec import Capability, Policy, SecurityConfig, StageError, StageWarning, report
from hardexec.plan import compile_plan
from hardexec.report import parse_report


def args_of(report_fd=None, executable=None, groups_fd=None, **security):
    plan = compile_plan(Policy(security=SecurityConfig(**security)))
    return plan.stage_args(report_fd, executable, groups_fd=groups_fd)


def test_drop_all_keep_one_nnp():
    # A program left as uid 0 (this process's euid, no user given) gets locked securebits.
    root = ["--lock-securebits"] if os.geteuid() == 0 else []
    assert args_of(7, drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True) == [
        "--report-fd=7",
        "--drop-caps=0000000000000400",
        *root,
        "--nnp",
        "--",
    ]


def test_securebits_are_locked_only_for_a_uid_0_program():
    assert "--lock-securebits" in args_of(None, drop_all_caps=True, user=0, supplementary_groups=[])
    assert "--lock-securebits" not in args_of(
        None, drop_all_caps=True, user=65534, supplementary_groups=[]
    )
    assert "--lock-securebits" not in args_of(
        None, user=0, supplementary_groups=[]
    )  # nothing dropped: nothing to lock


def test_identity_and_strict():
    args = args_of(
        None,
        "/bin/prog",
        9,
        drop_all_caps=True,
        fail_on_cap_error=True,
        user=65534,
        group=65534,
        supplementary_groups=[1, 2],
    )
    assert args == [
        "--uid=65534",
        "--gid=65534",
        "--groups-fd=9",
        "--drop-caps=0000000000000000",
        "--strict",
        "--exec=/bin/prog",
        "--",
    ]


def test_groups_travel_as_native_gids_in_an_fd():
    plan = compile_plan(Policy(security=SecurityConfig(supplementary_groups=[1, 70000])))
    assert plan.groups_data() == array.array("I", [1, 70000]).tobytes()
    with pytest.raises(ValueError, match="groups_fd"):
        plan.stage_args(None)  # a list of groups and nowhere to put it


def test_env_fd_signals_and_die_with_parent():
    plan = compile_plan(Policy(security=SecurityConfig(no_new_privs=True), die_with_parent=True))
    assert plan.stage_args(3, env_fd=4, parent=77, ignore_signals=(25, 13)) == [
        "--report-fd=3",
        "--env-fd=4",
        "--nnp",
        "--ignore-signals=13,25",
        "--die-with-parent=77",
        "--",
    ]


def test_cleared_groups_and_bytes_executable():
    assert args_of(3, b"/bin/x", group=0) == [
        "--report-fd=3",
        "--gid=0",
        "--clear-groups",
        b"--exec=/bin/x",
        "--",
    ]


def test_nnp_only_touches_no_capability():
    assert args_of(3, no_new_privs=True) == ["--report-fd=3", "--nnp", "--"]


def test_word_one_caps_reach_the_mask():
    args = args_of(drop_all_caps=True, keep_caps=[Capability.BPF, Capability.CHECKPOINT_RESTORE])
    assert "--drop-caps=0000018000000000" in args


def test_report_warnings_and_fatal_step():
    report = parse_report(b"W keep_caps 1 24\nW bounding_set 1 8\nF capset 1 -\n", "prog")
    assert [(w.step, w.errno) for w in report.warnings] == [("keep_caps", 1), ("bounding_set", 1)]
    assert all(isinstance(w, StageWarning) for w in report.warnings)
    assert "CAP_SYS_RESOURCE" in str(report.warnings[0])
    assert "CAP_SETPCAP" in str(report.warnings[1])
    assert isinstance(report.error, StageError) and isinstance(report.error, OSError)
    assert (report.error.step, report.error.errno) == ("capset", errno.EPERM)
    assert str(report.error) == "capset failed: [Errno 1] Operation not permitted"


@pytest.mark.parametrize(
    ("number", "kind"),
    [(errno.ENOENT, FileNotFoundError), (errno.EACCES, PermissionError), (errno.ENOEXEC, OSError)],
)
def test_exec_failure_is_the_exception_subprocess_raises(number, kind):
    error = parse_report(f"F exec {number} -\n".encode(), b"./prog").error
    assert type(error) is kind and not isinstance(error, StageError)
    assert error.errno == number and error.filename == "./prog"


def test_eof_alone_means_exec_succeeded():
    report = parse_report(b"", "prog")
    assert report.error is None and report.warnings == ()


@pytest.mark.parametrize(
    "garbage", [b"X y 1 -\n", b"W step\n", b"F capset one -\n", b"W a 1 - extra\n"]
)
def test_malformed_report_is_a_protocol_error(garbage):
    error = parse_report(garbage, "prog").error
    assert isinstance(error, StageError) and error.step == "report" and error.errno == errno.EPROTO


def test_stage_error_pickles_with_its_step():
    import pickle

    err = pickle.loads(pickle.dumps(StageError("setresuid", errno.EPERM, "x")))
    assert (err.step, err.errno, err.detail) == ("setresuid", errno.EPERM, "x")


def test_a_cap_held_only_in_the_launchers_permitted_set_is_explained(monkeypatch):
    """File capabilities give a launcher a permitted cap that no exec of a plain program keeps:
    the detail says exactly that, and how to keep it (ambient)."""
    monkeypatch.setattr(report, "_own_sets", lambda: {"CapPrm": 1 << 10, "CapEff": 1 << 10})
    [warning] = parse_report(b"W keep_caps 1 10\n", "prog").warnings
    assert "CAP_NET_BIND_SERVICE is in the launcher's permitted set but not in its ambient" in (
        str(warning)
    )
    assert "--ambient-caps +net_bind_service" in str(warning)
    monkeypatch.setattr(report, "_own_sets", lambda: {"CapPrm": 0, "CapEff": 0})
    [warning] = parse_report(b"W keep_caps 1 10\n", "prog").warnings
    assert "CAP_NET_BIND_SERVICE is not in the launcher's permitted set" in str(warning)


def test_a_fatal_bounding_drop_for_root_says_why():
    root = Policy(security=SecurityConfig(drop_all_caps=True, user=0))
    error = parse_report(b"F bounding_set 1 0\n", "prog", root).error
    assert "no CAP_SETPCAP: root would regain every capability at exec" in str(error)
    nnp = Policy(security=SecurityConfig(drop_all_caps=True, user=0, no_new_privs=True))
    error = parse_report(b"F bounding_set 1 0\n", "prog", nnp).error
    assert "root would regain" not in str(error)
