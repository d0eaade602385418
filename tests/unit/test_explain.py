"""The exposure score's table: its weights, its normalisation, and what triggers each check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hardexec import CapSet, CgroupLimits, Policy, RlimitConfig
from hardexec.confine.landlock import Ruleset
from hardexec.explain import CHECKS, CgroupPlan, CheckResult, _checks, level, readable_size, score
from hardexec.predict import Prediction

NOBODY = (65534,) * 4


def test_the_table_is_well_formed():
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    assert all(c.weight > 0 and c.title and c.why for c in CHECKS)
    assert sum(c.weight for c in CHECKS) == pytest.approx(9.8)  # the documented total


def test_score_is_the_failed_weights_normalised_to_10():
    total = sum(c.weight for c in CHECKS)
    assert score([CheckResult(c, False) for c in CHECKS]) == 10.0
    assert score([CheckResult(c, True) for c in CHECKS]) == 0.0
    for check in CHECKS:
        one = [CheckResult(c, c is not check) for c in CHECKS]
        assert score(one) == round(10 * check.weight / total, 1)


def test_levels():
    assert [level(x) for x in (0.0, 2.0, 2.1, 5.0, 7.9, 8.1, 10.0)] == [
        "OK", "OK", "MEDIUM", "MEDIUM", "EXPOSED", "UNSAFE", "UNSAFE"
    ]  # fmt: skip


def test_readable_sizes():
    assert readable_size(64 << 20) == "64M"
    assert readable_size(1 << 40) == "1T"
    assert readable_size(1536) == "1536 bytes (~1.5K)"
    assert readable_size(0) == "0 bytes"


def confined_state(**change):
    """Everything a check looks at, fully confined; ``change`` exposes one thing."""
    state = {
        "prm": CapSet(),
        "bnd": CapSet(),
        "uids": NOBODY,
        "nnp": True,
        "unshare": ("net", "pid", "ipc"),
        "rules": (("/usr", "rx"),),
        "filter": True,
        "cgroup": {"pids.max": "64", "memory.max": "1048576", "cpu.max": "50000 100000"},
        "rlimits": {
            "max_open_files": 64,
            "max_file_size_bytes": 1 << 20,
            "disable_core_dumps": True,
        },
    }
    state.update(change)
    return state


def outcomes(state) -> dict[str, bool]:
    p = Prediction(
        inh=CapSet(), prm=state["prm"], eff=state["prm"], bnd=state["bnd"], amb=CapSet(),
        no_new_privs=state["nnp"], uids=state["uids"], gids=NOBODY,
    )  # fmt: skip
    rules = state["rules"]
    ruleset = Ruleset(
        abi=5,
        handled_fs=0xFFFF if rules else 0,
        handled_net=0,
        rules=tuple((path, 1) for path, _ in rules),
        ports=(),
        unenforced=(),
        access=tuple(word for _, word in rules),
    )
    confined = SimpleNamespace(
        unshare=state["unshare"],
        ruleset=ruleset if rules else None,
        filter=object() if state["filter"] else None,
    )
    files = state["cgroup"]
    cgroup = None
    if files is not None:
        cgroup = CgroupPlan(
            parent="/sys/fs/cgroup/x",
            name="hardexec-1-<seq>-<time>",
            files=tuple(files.items()),
            controllers=(),
            usable=True,
        )
    policy = Policy(rlimits=RlimitConfig(**state["rlimits"]), cgroups=CgroupLimits())
    return {r.check.name: r.passed for r in _checks(policy, p, confined, cgroup)}


def test_a_fully_confined_state_passes_every_check():
    assert all(outcomes(confined_state()).values())


ADMIN, SETUID, BIND = CapSet.of("SYS_ADMIN"), CapSet.of("SETUID"), CapSet.of("NET_BIND_SERVICE")
TRIGGERS = {
    "caps.sys_admin": {"prm": ADMIN},
    "caps.escalating": {"prm": SETUID},
    "caps.any": {"prm": BIND},
    "caps.bounding": {"bnd": BIND, "nnp": False},
    "uid0": {"uids": (0, 0, 0, 0)},
    "no_new_privs": {"nnp": False},
    "seccomp": {"filter": False},
    "network": {"unshare": ("pid", "ipc")},
    "fs.write": {"rules": (("/", "rw"),)},
    "fs.read": {"rules": (("/", "ro"),)},
    "pid_ns": {"unshare": ("net", "ipc")},
    "ipc_ns": {"unshare": ("net", "pid")},
    "tree": {"unshare": ("net", "ipc"), "cgroup": None},
    "limit.pids": {"cgroup": {"memory.max": "1", "cpu.max": "1000 100000"}},
    "limit.memory": {"cgroup": {"pids.max": "1", "cpu.max": "1000 100000"}},
    "limit.cpu": {"cgroup": {"pids.max": "1", "memory.max": "1"}},
    "limit.nofile": {"rlimits": {"max_file_size_bytes": 1, "disable_core_dumps": True}},
    "limit.fsize": {"rlimits": {"max_open_files": 64, "disable_core_dumps": True}},
    "limit.core": {"rlimits": {"max_open_files": 64, "max_file_size_bytes": 1}},
}


def test_every_check_has_a_trigger():
    assert set(TRIGGERS) == {c.name for c in CHECKS}


@pytest.mark.parametrize("name", list(TRIGGERS))
def test_each_check_fails_on_its_trigger(name):
    found = outcomes(confined_state(**TRIGGERS[name]))
    assert found[name] is False
    if name == "fs.read":  # read-only "/" still keeps writes denied
        assert found["fs.write"] is True
    if name in ("pid_ns", "limit.pids"):  # one exposure, not a cascade
        assert [n for n, ok in found.items() if not ok] == [name]


def test_rlimits_stand_in_for_cgroup_limits():
    rlimits = {"max_processes": 10, "address_space": 1 << 30, "cpu_seconds": 5}
    found = outcomes(confined_state(cgroup={}, rlimits=rlimits))
    assert found["limit.pids"] and found["limit.memory"] and found["limit.cpu"]
    assert not found["limit.core"]  # these rlimits do not include it
