"""Policies as plain data: lossless round trips, and strict reading with key paths in errors."""

import json

import pytest

from hardexec import (
    CgroupLimits,
    CpuMax,
    Policy,
    PolicyError,
    RlimitConfig,
    SecurityConfig,
)
from hardexec.serial import POLICY_VERSION

EVERY_FIELD = Policy(
    security=SecurityConfig(
        drop_all_caps=True,
        keep_caps=["NET_BIND_SERVICE", "cap_net_raw", 41],
        no_new_privs=True,
        fail_on_cap_error=True,
        user="nobody",
        group=65534,
        supplementary_groups=["nogroup", 7],
    ),
    rlimits=RlimitConfig(
        max_open_files=1024,
        max_file_size_bytes=10 << 20,
        disable_core_dumps=True,
        address_space=1 << 30,
        cpu_seconds=5,
        max_processes=50,
        stack=1 << 20,
    ),
    cgroups=CgroupLimits(
        cpu=CpuMax(quota=50_000, period=100_000),
        memory=256 << 20,
        pids=64,
        fail_on_error=True,
        keep_at_exit=True,
    ),
    die_with_parent=True,
)


@pytest.mark.parametrize("policy", [Policy(), EVERY_FIELD], ids=["empty", "every-field"])
def test_round_trip_through_json_is_lossless(policy):
    text = json.dumps(policy.to_dict())
    again = Policy.from_dict(json.loads(text))
    assert again == policy
    assert again.security.identity == policy.security.identity
    assert again.to_dict() == policy.to_dict()


def test_the_plain_form_is_readable_and_versioned():
    data = EVERY_FIELD.to_dict()
    assert data["version"] == POLICY_VERSION
    assert data["security"]["keep_caps"] == ["NET_BIND_SERVICE", "NET_RAW", "41"]
    assert data["cgroups"]["cpu"] == {"quota": 50_000, "period": 100_000}
    assert Policy().to_dict() == {
        "version": 1,
        "security": {
            "drop_all_caps": False,
            "keep_caps": [],
            "no_new_privs": False,
            "fail_on_cap_error": False,
            "user": None,
            "group": None,
            "supplementary_groups": None,
        },
        "rlimits": {
            "max_open_files": None,
            "max_file_size_bytes": None,
            "disable_core_dumps": False,
            "address_space": None,
            "cpu_seconds": None,
            "max_processes": None,
            "stack": None,
        },
        "cgroups": None,
        "cgroup_parent": None,
        "die_with_parent": False,
        "confinement": None,
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "policy: expected an object, got []"),
        ({}, "policy.version: missing (this hardexec writes 1)"),
        ({"version": 2}, "policy.version: 2 is not a version this hardexec reads (1)"),
        ({"version": True}, "policy.version: True is not a version this hardexec reads (1)"),
        (
            {"version": 1, "securty": {}},
            "policy.securty: unknown key (known here: security, rlimits, cgroups, "
            "cgroup_parent, die_with_parent, confinement)",
        ),
        ({"version": 1, "security": []}, "policy.security: expected an object, got []"),
        (
            {"version": 1, "security": {"keep_caps": ["NET_RAW", "NET_BIND"]}},
            "policy.security.keep_caps[1]: unknown capability 'NET_BIND'; did you mean "
            "NET_ADMIN, NET_BIND_SERVICE?",
        ),
        (
            {"version": 1, "security": {"drop_all_caps": "yes"}},
            "policy.security.drop_all_caps: expected True or False, got 'yes'",
        ),
        (
            {"version": 1, "rlimits": {"max_open_files": 0}},
            "policy.rlimits.max_open_files cannot be zero",
        ),
        (
            {"version": 1, "rlimits": {"nofile": 5}},
            "policy.rlimits.nofile: unknown key (known here: max_open_files, "
            "max_file_size_bytes, disable_core_dumps, address_space, cpu_seconds, "
            "max_processes, stack)",
        ),
        (
            {"version": 1, "cgroups": {"cpu": {"period": 0}}},
            "policy.cgroups.cpu.period cannot be zero",
        ),
        (
            {"version": 1, "cgroups": {"cpu": {"quota": 1, "burst": 2}}},
            "policy.cgroups.cpu.burst: unknown key (known here: quota, period)",
        ),
        ({"version": 1, "cgroups": 5}, "policy.cgroups: expected an object, got 5"),
        (
            {"version": 1, "cgroup_parent": 5},
            "policy.cgroup_parent: expected a str path, got 5",
        ),
        (
            {"version": 1, "die_with_parent": 1},
            "policy.die_with_parent: expected True or False, got 1",
        ),
    ],
)
def test_reading_is_strict_and_names_the_key_path(data, message):
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(data)
    assert str(err.value) == message


def test_writing_something_else_is_a_type_error():
    from hardexec.serial import policy_to_dict

    with pytest.raises(TypeError, match="expected a hardexec.Policy"):
        policy_to_dict(SecurityConfig())  # type: ignore[arg-type]
