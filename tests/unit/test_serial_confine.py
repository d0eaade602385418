"""A policy's confinement as plain data: lossless round trips through JSON, the plain form's
shape, documents from before it existed, and strict reading with key paths in errors."""

import json
import os
import re

import pytest

import hardexec.serial
from hardexec import Policy, PolicyError, Result, RlimitConfig, SecurityConfig
from hardexec._record import MISSING, fields
from hardexec.confine import Confinement, PathRule, SyscallFilter

EVERY_FIELD = Confinement(
    # A lone surrogate is how os.fsdecode carries a byte that is not UTF-8.
    fs=[PathRule("/usr", "rx"), ("/tmp", "rw"), PathRule("/srv/caf\u00e9\udcff"), ("/", "rwx")],
    fs_dependencies=False,
    tcp_bind=[8080, 0],
    tcp_connect=[443, 80],
    syscalls=SyscallFilter(allow=["read", "write"], deny=["ptrace", "mount:EACCES"], default=True),
    namespaces=["uts", "net", "pid", "ipc"],
    hostname="box-1.example",
    umask=0o077,
    best_effort=True,
)
DENY_LIST = Confinement(syscalls=SyscallFilter(deny=["ptrace:kill"]), umask=0)

POLICIES = {
    "every-field": Policy(confinement=EVERY_FIELD),
    "deny-list": Policy(confinement=DENY_LIST),
    "empty-confinement": Policy(confinement=Confinement()),
    "no-confinement": Policy(),
}


def _through_json(data):
    return json.loads(json.dumps(data))


def _default(item):
    if item.default_factory is not MISSING:
        return item.default_factory()
    return item.default


def _at_default(record):
    return {
        item.name
        for item in fields(record)
        if item.init and getattr(record, item.name) == _default(item)
    }


def _policy(**confinement):
    return {"version": 1, "confinement": confinement}


def test_the_fixture_leaves_no_field_at_its_default():
    # What the round trips below prove is only as wide as the fields they set.
    assert _at_default(EVERY_FIELD) == set()
    assert _at_default(EVERY_FIELD.syscalls) == set()
    assert {rule.access for rule in EVERY_FIELD.fs} == {"ro", "rx", "rw", "rwx"}


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES)
def test_a_confined_policy_round_trips_through_json(policy):
    again = Policy.from_dict(_through_json(policy.to_dict()))
    assert again == policy
    if policy.confinement is not None:  # == says it; this says which field, if one differs
        for item in fields(Confinement):
            assert getattr(again.confinement, item.name) == getattr(
                policy.confinement, item.name
            ), item.name
    assert again.to_dict() == policy.to_dict()


def test_the_plain_form():
    data = Policy(confinement=EVERY_FIELD).to_dict()
    assert data["confinement"] == {
        "fs": [
            {"path": "/usr", "access": "rx"},
            {"path": "/tmp", "access": "rw"},
            {"path": "/srv/caf\u00e9\udcff", "access": "ro"},
            {"path": "/", "access": "rwx"},
        ],
        "fs_dependencies": False,
        "tcp_bind": [0, 8080],
        "tcp_connect": [80, 443],
        "syscalls": {
            "allow": list(EVERY_FIELD.syscalls.allow),
            "deny": list(EVERY_FIELD.syscalls.deny),
            "default": True,
        },
        "namespaces": ["net", "pid", "ipc", "uts"],
        "hostname": "box-1.example",
        "umask": 63,
        "best_effort": True,
    }
    assert data["version"] == 1  # a key added, not one changed: the version stays
    assert Policy().to_dict()["confinement"] is None
    syscalls = Policy(confinement=DENY_LIST).to_dict()["confinement"]["syscalls"]
    assert syscalls["allow"] is None  # deny-list mode, not "allow nothing"
    assert Confinement().is_empty()
    assert Policy(confinement=Confinement()).to_dict()["confinement"] == {
        "fs": [],
        "fs_dependencies": True,
        "tcp_bind": [],
        "tcp_connect": [],
        "syscalls": None,
        "namespaces": [],
        "hostname": None,
        "umask": None,
        "best_effort": False,
    }


def test_the_plain_form_is_plain_data():
    # Lists and objects only (no tuples or records): what any JSON writer or reader takes.
    def check(value):
        if isinstance(value, dict):
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)
        else:
            assert value is None or isinstance(value, bool | int | float | str), value

    check(Policy(confinement=EVERY_FIELD).to_dict())


def test_a_document_from_before_confinement_still_reads():
    # Exactly what this hardexec wrote before Policy had a confinement.
    old = {
        "version": 1,
        "security": {
            "drop_all_caps": True,
            "keep_caps": ["NET_BIND_SERVICE"],
            "no_new_privs": True,
            "fail_on_cap_error": False,
            "user": None,
            "group": None,
            "supplementary_groups": None,
        },
        "rlimits": {"max_open_files": 1024},
        "cgroups": None,
        "cgroup_parent": None,
        "die_with_parent": True,
    }
    policy = Policy.from_dict(old)
    assert policy == Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True
        ),
        rlimits=RlimitConfig(max_open_files=1024),
        die_with_parent=True,
    )
    assert policy.confinement is None
    assert Policy.from_dict({"version": 1}) == Policy()
    assert Policy.from_dict({"version": 1, "confinement": None}) == Policy()


def test_keys_left_out_take_the_defaults():
    assert Policy.from_dict(_policy()).confinement == Confinement()
    assert Policy.from_dict(_policy(umask=18)).confinement == Confinement(umask=0o022)
    read = Policy.from_dict(_policy(fs=[{"path": "/usr"}], syscalls={"deny": ["ptrace"]}))
    assert read.confinement == Confinement(
        fs=[PathRule("/usr", "ro")], syscalls=SyscallFilter(deny=["ptrace"])
    )
    read = Policy.from_dict(_policy(syscalls={"default": True}))
    assert read.confinement.syscalls == SyscallFilter(default=True)


def test_an_empty_allow_list_is_not_null():
    # [] is allow-list mode with nothing allowed beyond @default; null is deny-list mode.
    data = Policy(confinement=Confinement(syscalls=SyscallFilter(allow=[]))).to_dict()
    assert data["confinement"]["syscalls"]["allow"] == []
    assert Policy.from_dict(_through_json(data)).confinement.syscalls.allow == ()


def test_a_relative_path_is_read_from_the_readers_directory(tmp_path, monkeypatch):
    # Written, a rule's path is already absolute (the class resolved it when it was made);
    # read, a hand-written relative one resolves as the class resolves it in Python.
    monkeypatch.chdir(tmp_path)
    assert PathRule("data").path == os.path.join(str(tmp_path), "data")
    read = Policy.from_dict(_policy(fs=[{"path": "data", "access": "rw"}]))
    assert read.confinement.fs == (PathRule(str(tmp_path / "data"), "rw"),)


def test_the_module_docstrings_examples_read():
    doc = hardexec.serial.__doc__
    # The policy example's confinement, up to the blank line ending the example; less the
    # brace closing the policy.
    text = doc[doc.index('"confinement": {') :].split("\n\n", 1)[0].removesuffix("}")
    example = json.loads("{" + text + "}")
    policy = Policy.from_dict({"version": 1, **example})
    assert policy.to_dict()["confinement"] == example["confinement"]
    text = doc[doc.index('"denied_syscalls": {') :].split("}", 1)[0] + "}"
    example = json.loads("{" + text + "}")
    result = Result.from_dict({"version": 1, "name": "make", **example})
    assert result.denied_syscalls == example["denied_syscalls"]


CONFINEMENT_KEYS = (
    "fs, fs_dependencies, tcp_bind, tcp_connect, syscalls, namespaces, hostname, umask, best_effort"
)
BAD_HOST = "is not a host name (1..64 letters, digits, '-' and '.')"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": 1, "confinement": 5}, "policy.confinement: expected an object, got 5"),
        ({"version": 1, "confinement": []}, "policy.confinement: expected an object, got []"),
        (
            {"version": 1, "confinement": True},
            "policy.confinement: expected an object, got True",
        ),
        (
            _policy(paths=[]),
            f"policy.confinement.paths: unknown key (known here: {CONFINEMENT_KEYS})",
        ),
        (
            _policy(landlock=True),  # a property of the class, not a field
            f"policy.confinement.landlock: unknown key (known here: {CONFINEMENT_KEYS})",
        ),
        (_policy(fs="/usr"), "policy.confinement.fs: expected a list of path rules, got '/usr'"),
        (
            _policy(fs={"/usr": "ro"}),
            "policy.confinement.fs: expected a list of path rules, got {'/usr': 'ro'}",
        ),
        (_policy(fs=None), "policy.confinement.fs: expected a list of path rules, got None"),
        (
            _policy(fs=[["/usr", "ro"]]),
            "policy.confinement.fs[0]: expected an object, got ['/usr', 'ro']",
        ),
        (
            _policy(fs=[{"path": "/usr"}, "/tmp"]),
            "policy.confinement.fs[1]: expected an object, got '/tmp'",
        ),
        (
            _policy(fs=[{"path": "/usr"}, {"access": "ro"}]),
            "policy.confinement.fs[1].path: missing",
        ),
        (
            _policy(fs=[{"path": "/usr", "mode": "ro"}]),
            "policy.confinement.fs[0].mode: unknown key (known here: path, access)",
        ),
        (
            _policy(fs=[{"path": "/usr", "access": "r"}]),
            "policy.confinement.fs[0].access: 'r' is not one of ro, rx, rw, rwx",
        ),
        (
            _policy(fs=[{"path": "/usr", "access": None}]),
            "policy.confinement.fs[0].access: None is not one of ro, rx, rw, rwx",
        ),
        (
            _policy(fs=[{"path": "/usr"}, {"path": "/tmp", "access": "RW"}]),
            "policy.confinement.fs[1].access: 'RW' is not one of ro, rx, rw, rwx",
        ),
        (_policy(fs=[{"path": ""}]), "policy.confinement.fs[0].path: the path is empty"),
        (_policy(fs=[{"path": 5}]), "policy.confinement.fs[0].path: expected a path, got 5"),
        (
            _policy(fs=[{"path": None}]),
            "policy.confinement.fs[0].path: expected a path, got None",
        ),
        (
            _policy(fs=[{"path": "/a\0b"}]),
            "policy.confinement.fs[0].path: the path '/a\\x00b' contains a NUL byte",
        ),
        (
            _policy(fs_dependencies="yes"),
            "policy.confinement.fs_dependencies: expected True or False, got 'yes'",
        ),
        (
            _policy(fs_dependencies=None),
            "policy.confinement.fs_dependencies: expected True or False, got None",
        ),
        (
            _policy(best_effort=1),
            "policy.confinement.best_effort: expected True or False, got 1",
        ),
        (_policy(tcp_bind=80), "policy.confinement.tcp_bind: expected a list of ports, got 80"),
        (
            _policy(tcp_bind=None),
            "policy.confinement.tcp_bind: expected a list of ports, got None",
        ),
        (
            _policy(tcp_connect={"443": 1}),
            "policy.confinement.tcp_connect: expected a list of ports, got {'443': 1}",
        ),
        (
            _policy(tcp_connect="443"),
            "policy.confinement.tcp_connect: expected a list of ports, got '443'",
        ),
        (
            _policy(tcp_bind=[80, 70000]),
            "policy.confinement.tcp_bind[1]: expected a TCP port 0..65535, got 70000",
        ),
        (
            _policy(tcp_bind=[-1]),
            "policy.confinement.tcp_bind[0]: expected a TCP port 0..65535, got -1",
        ),
        (
            _policy(tcp_connect=[True]),
            "policy.confinement.tcp_connect[0]: expected a TCP port 0..65535, got True",
        ),
        (
            _policy(tcp_connect=[443.0]),
            "policy.confinement.tcp_connect[0]: expected a TCP port 0..65535, got 443.0",
        ),
        (
            _policy(tcp_connect=["443"]),
            "policy.confinement.tcp_connect[0]: expected a TCP port 0..65535, got '443'",
        ),
        (
            _policy(namespaces="net"),
            "policy.confinement.namespaces: expected a list of names, got 'net'",
        ),
        (
            _policy(namespaces={"net": True}),
            "policy.confinement.namespaces: expected a list of names, got {'net': True}",
        ),
        (
            _policy(namespaces=None),
            "policy.confinement.namespaces: expected a list of names, got None",
        ),
        (
            _policy(namespaces=["net", "user"]),
            "policy.confinement.namespaces[1]: 'user' is not one of net, pid, ipc, uts",
        ),
        (
            _policy(namespaces=["net", ["pid"]]),
            "policy.confinement.namespaces[1]: ['pid'] is not one of net, pid, ipc, uts",
        ),
        (
            _policy(hostname="box"),
            "policy.confinement.hostname: needs the uts namespace (namespaces=['uts'])",
        ),
        (
            _policy(namespaces=["uts"], hostname="a box"),
            f"policy.confinement.hostname: 'a box' {BAD_HOST}",
        ),
        (
            _policy(namespaces=["uts"], hostname=""),
            f"policy.confinement.hostname: '' {BAD_HOST}",
        ),
        (
            _policy(namespaces=["uts"], hostname=5),
            f"policy.confinement.hostname: 5 {BAD_HOST}",
        ),
        (_policy(umask="077"), "policy.confinement.umask: expected 0o000..0o777, got '077'"),
        (_policy(umask=512), "policy.confinement.umask: expected 0o000..0o777, got 512"),
        (_policy(umask=-1), "policy.confinement.umask: expected 0o000..0o777, got -1"),
        (_policy(umask=True), "policy.confinement.umask: expected 0o000..0o777, got True"),
        (_policy(umask=63.0), "policy.confinement.umask: expected 0o000..0o777, got 63.0"),
        (_policy(syscalls=[]), "policy.confinement.syscalls: expected an object, got []"),
        (
            _policy(syscalls="ptrace"),
            "policy.confinement.syscalls: expected an object, got 'ptrace'",
        ),
        (
            _policy(syscalls={}),
            "policy.confinement.syscalls: nothing to filter (give allow, deny or default=True)",
        ),
        (
            _policy(syscalls={"allow": None, "deny": [], "default": False}),
            "policy.confinement.syscalls: nothing to filter (give allow, deny or default=True)",
        ),
        (
            _policy(syscalls={"deny": ["ptrace"], "kill": True}),
            "policy.confinement.syscalls.kill: unknown key (known here: allow, deny, default)",
        ),
        (
            _policy(syscalls={"deny": "ptrace"}),
            "policy.confinement.syscalls.deny: expected a list of names, got 'ptrace'",
        ),
        (
            _policy(syscalls={"deny": None}),
            "policy.confinement.syscalls.deny: expected a list of names, got None",
        ),
        (
            _policy(syscalls={"allow": {"read": 1}}),
            "policy.confinement.syscalls.allow: expected a list of names or null, got {'read': 1}",
        ),
        (
            _policy(syscalls={"allow": "read"}),
            "policy.confinement.syscalls.allow: expected a list of names or null, got 'read'",
        ),
        (
            _policy(syscalls={"deny": ["ptrace", 5]}),
            "policy.confinement.syscalls.deny[1]: expected a name, got 5",
        ),
        (
            _policy(syscalls={"deny": ["ptrace", ""]}),
            "policy.confinement.syscalls.deny[1]: expected a name, got ''",
        ),
        (
            _policy(syscalls={"allow": [None]}),
            "policy.confinement.syscalls.allow[0]: expected a name, got None",
        ),
        (
            _policy(syscalls={"default": 1}),
            "policy.confinement.syscalls.default: expected True or False, got 1",
        ),
        (
            _policy(syscalls={"deny": ["ptrace"], "default": None}),
            "policy.confinement.syscalls.default: expected True or False, got None",
        ),
    ],
)
def test_reading_is_strict_and_names_the_key_path(data, message):
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(data)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("syscalls", "where"),
    [
        ({"deny": ["ptrace", "no_such_syscall"]}, "deny[1]"),
        ({"allow": ["read", "no_such_syscall"]}, "allow[1]"),
        ({"deny": ["@no-such-group"]}, "deny[0]"),
        ({"deny": ["ptrace:EWHAT"]}, "deny[0]"),
        ({"allow": ["read:kill"]}, "allow[0]"),
        ({"deny": ["ptrace", ":EPERM"]}, "deny[1]"),
    ],
)
def test_the_filters_own_checks_name_the_key_path(syscalls, where):
    # The words after the path are the syscall tables' to choose.
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(_policy(syscalls=syscalls))
    message = str(err.value)
    assert message.startswith(f"policy.confinement.syscalls.{where}: "), message
    assert message.count("syscalls") == 1, message  # the path once, not also the class's own


def test_an_unknown_syscall_is_named_as_unknown():
    with pytest.raises(PolicyError) as err:
        Policy.from_dict(_policy(syscalls={"deny": ["ptrace", "ptrac"]}))
    assert str(err.value).startswith("policy.confinement.syscalls.deny[1]: unknown syscall 'ptrac'")


@pytest.mark.parametrize(
    ("confinement", "message"),
    [
        (
            {"umask": 10**5000},
            re.escape("policy.confinement.umask: expected 0o000..0o777, got <an integer of "),
        ),
        (
            {"tcp_bind": [10**5000]},
            re.escape("policy.confinement.tcp_bind[0]: expected a TCP port 0..65535, got <an "),
        ),
        ({"umask": float("nan")}, re.escape("policy.confinement.umask: expected ")),
        ({"tcp_connect": [float("inf")]}, re.escape("policy.confinement.tcp_connect[0]: ")),
    ],
)
def test_huge_numbers_and_nan_are_policy_errors_not_crashes(confinement, message):
    # Python's json reads NaN and Infinity, and integers of any size.
    with pytest.raises(PolicyError, match="^" + message):
        Policy.from_dict(_policy(**confinement))


def test_the_first_bad_rule_is_named():
    fs = [{"path": "/usr"}, {"path": "/etc", "access": "rx"}, {"path": "/x", "access": "no"}]
    with pytest.raises(PolicyError, match=re.escape("policy.confinement.fs[2].access: 'no'")):
        Policy.from_dict(_policy(fs=fs))
