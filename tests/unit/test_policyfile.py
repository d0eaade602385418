"""Policy files: every key round-trips (file → PolicyFile → file), every mistake is named by
the file, its key path and its value, and the profiles hold exactly what the README says."""

import json
import os

import pytest

from hardexec import CgroupLimits, CpuMax, Policy, RlimitConfig, SecurityConfig
from hardexec._record import fields
from hardexec.confine import Confinement, PathRule, SyscallFilter
from hardexec.errors import PolicyError
from hardexec.policyfile import (
    PROFILES,
    PolicyFile,
    RunSettings,
    dumps,
    load,
    loads,
    merge,
    profile,
    to_dict,
)

# Every field of every record a policy file holds, none at its default.
FULL = PolicyFile(
    policy=Policy(
        security=SecurityConfig(
            drop_all_caps=True,
            keep_caps=["NET_BIND_SERVICE", "NET_RAW"],
            no_new_privs=True,
            fail_on_cap_error=True,
            user="nobody",
            group="nogroup",
            supplementary_groups=["nogroup"],
        ),
        rlimits=RlimitConfig(
            max_open_files=64,
            max_file_size_bytes=1 << 20,
            disable_core_dumps=True,
            address_space=1 << 30,
            cpu_seconds=5,
            max_processes=50,
            stack=8 << 20,
        ),
        cgroups=CgroupLimits(
            cpu=CpuMax(quota=50_000, period=200_000),
            memory=64 << 20,
            pids=10,
            fail_on_error=False,  # a file's default is True: enforced
            keep_at_exit=True,
        ),
        cgroup_parent=None,  # needs a real delegated group: tests/host/test_cli_policy.py
        die_with_parent=True,
        confinement=Confinement(
            fs=[PathRule("/usr", "rx"), PathRule("/tmp", "rw")],
            fs_dependencies=False,
            tcp_bind=[8080],
            tcp_connect=[443, 80],
            syscalls=SyscallFilter(allow=["@default", "socket"], deny=["ptrace:EACCES"]),
            namespaces=["net", "uts", "ipc", "pid"],
            hostname="box",
            umask=0o077,
            best_effort=True,
        ),
    ),
    run=RunSettings(
        env_policy=("HOME", "LANG"),
        env=(("LANG", "C.UTF-8"), ("A", 'quote " and \\ and \t tab')),
        timeout=30.5,
        kill_after=2.0,
        max_output=1 << 20,
    ),
)
RECORDS = (SecurityConfig, RlimitConfig, CgroupLimits, CpuMax, Confinement, SyscallFilter)


def _leaf_keys(plain, prefix=""):
    keys = set()
    for key, value in plain.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "env":
            keys |= _leaf_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def test_every_key_is_written_when_not_at_its_default():
    written = _leaf_keys(to_dict(FULL))
    expected = {"version", "die_with_parent"}
    for name, cls in (
        ("security", SecurityConfig),
        ("rlimits", RlimitConfig),
        ("cgroups", CgroupLimits),
        ("confinement", Confinement),
        ("run", RunSettings),
    ):
        for item in fields(cls):
            if item.init and item.name not in ("cpu", "syscalls"):
                expected.add(f"{name}.{item.name}")
    expected |= {f"cgroups.cpu.{item.name}" for item in fields(CpuMax)}
    expected |= {f"confinement.syscalls.{item.name}" for item in fields(SyscallFilter)} - {
        "confinement.syscalls.default"  # False: with an allow-list, it is the default
    }
    assert written == expected


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_every_key_round_trips(fmt):
    text = dumps(FULL, fmt)
    assert loads(text, fmt=fmt, name="x") == FULL
    assert dumps(loads(text, fmt=fmt), fmt) == text  # file → PolicyFile → the same file


def test_defaults_are_left_out_and_an_empty_policy_is_just_its_version():
    assert dumps(PolicyFile()) == "version = 1\n"
    assert loads("version = 1\n") == PolicyFile()
    # A group with no limits is not the default (no group): it is written, as an empty table.
    doc = PolicyFile(policy=Policy(cgroups=CgroupLimits(fail_on_error=True)))
    assert dumps(doc) == "version = 1\n\n[cgroups]\n"
    assert loads(dumps(doc)) == doc


def test_a_files_cgroup_fails_closed_unless_it_says_otherwise():
    assert loads("version = 1\n[cgroups]\npids = 3\n").policy.cgroups.fail_on_error is True
    lenient = PolicyFile(policy=Policy(cgroups=CgroupLimits(pids=3)))  # the API's default
    assert "fail_on_error = false" in dumps(lenient)
    assert loads(dumps(lenient)) == lenient


def test_toml_written_reads_as_toml_says():
    import tomllib

    assert tomllib.loads(dumps(FULL)) == json.loads(dumps(FULL, "json"))


def test_load_by_suffix(tmp_path):
    for fmt in ("toml", "json"):
        path = tmp_path / f"web.{fmt}"
        path.write_text(dumps(FULL, fmt))
        assert load(path) == FULL
    other = tmp_path / "web.yaml"
    other.write_text("version: 1\n")
    with pytest.raises(PolicyError, match=r"web\.yaml: not a policy file name \(it must end in"):
        load(other)
    with pytest.raises(PolicyError, match=r"gone\.toml: cannot read it: No such file"):
        load(tmp_path / "gone.toml")
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"version = 1\n\xff")
    with pytest.raises(PolicyError, match=r"b\.toml: not UTF-8 text \(byte 12\)"):
        load(binary)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = ["CHOWN", "NET_BIND"]',
            "web.toml: security.keep_caps[1]: unknown capability 'NET_BIND'; did you mean "
            "NET_ADMIN, NET_BIND_SERVICE?",
        ),
        ("[security]\nuser = 'x'", "web.toml: version: missing (this hardexec writes 1)"),
        ("version = 2", "web.toml: version: 2 is not a version this hardexec reads (1)"),
        ("version = 1\nsecurty = {}", "web.toml: securty: unknown key (known here: run, security"),
        ("version = 1\n[security]\nnnp = true", "web.toml: security.nnp: unknown key (known here"),
        ("version = 1\n[run]\nuser = 'x'", "web.toml: run.user: unknown key (known here: env_pol"),
        ("version = 1\n[rlimits]\nstack = '8M'", "web.toml: rlimits.stack: "),
        ("version = 1\n[cgroups]\nmemory = '64M'", "web.toml: cgroups.memory: expected a whole"),
        ("version = 1\n[cgroups.cpu]\nperiod = 0", "web.toml: cgroups.cpu.period cannot be zero"),
        (
            "version = 1\n[confinement]\nfs = [{ path = '/x', access = 'rq' }]",
            "web.toml: confinement.fs[0].access: 'rq' is not one of ro, rx, rw, rwx",
        ),
        ("version = 1\n[confinement]\nfs = [{ access = 'ro' }]", "web.toml: confinement.fs[0].p"),
        ("version = 1\n[confinement]\ntcp_bind = 80", "web.toml: confinement.tcp_bind: expected"),
        (
            "version = 1\n[confinement.syscalls]\ndeny = ['nosuch']",
            "web.toml: confinement.syscalls.deny[0]: unknown syscall 'nosuch'",
        ),
        ("version = 1\n[confinement]\nnamespaces = ['mnt']", "web.toml: confinement.namespaces"),
        ("version = 1\n[confinement]\numask = 1000", "web.toml: confinement.umask: "),
        ("version = 1\n[run]\ntimeout = -1", "web.toml: run.timeout: -1 is not a positive number"),
        ("version = 1\n[run]\ntimeout = true", "web.toml: run.timeout: expected seconds, got True"),
        ("version = 1\n[run]\nkill_after = 3", "web.toml: run.kill_after: needs run.timeout"),
        ("version = 1\n[run]\nmax_output = 0", "web.toml: run.max_output: expected bytes, at le"),
        ("version = 1\n[run]\nenv_policy = 'x'", "web.toml: run.env_policy: 'x' is not 'inherit'"),
        ("version = 1\n[run]\nenv_policy = 3", "web.toml: run.env_policy: expected 'inherit', "),
        ("version = 1\n[run]\nenv = ['A=1']", "web.toml: run.env: expected a table of names to"),
        ("version = 1\n[run]\nenv = { 'A=B' = '1' }", "web.toml: run.env"),
        ("version = 1\nrun = 3", "web.toml: run: expected a table of keys, got int"),
        # A table where a list belongs would read as its keys: {SYS_ADMIN = false} would keep it.
        (
            "version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = { SYS_ADMIN = false }",
            "web.toml: security.keep_caps: expected a list of capabilities, got {'SYS_ADMIN'",
        ),
        (
            "version = 1\n[security]\nuser = 'nobody'\nsupplementary_groups = { root = false }",
            "web.toml: security.supplementary_groups: expected a list of groups or null, got",
        ),
        # TOML numbers are decimal: umask = 77 would be 0o115, so a mode is octal text.
        (
            "version = 1\n[confinement]\numask = 77",
            'web.toml: confinement.umask: expected octal text such as "077", got 77 (as a number '
            'it reads as "0115")',
        ),
        ("version = 1\n[confinement]\numask = '09'", "web.toml: confinement.umask: expected oct"),
        ("version = 1\n[confinement]\numask = '1777'", "web.toml: confinement.umask: expected 0o"),
        (
            "version = 1\n[confinement]\nfs = [{ path = '.', access = 'rw' }]",
            "web.toml: confinement.fs[0].path: '.' is relative; a policy file's paths must be",
        ),
        ("version = 1\ncgroup_parent = 'x/y'", "web.toml: cgroup_parent: 'x/y' is relative"),
        (
            "version = 1\n[run]\nenv_policy = { TOKEN = 'hunter2' }",
            "web.toml: run.env_policy: expected 'inherit', 'clear' or a list, got dict",
        ),
        (
            'version = 1\n"a\\nhardexec: forged" = 1',
            "web.toml: 'a\\nhardexec: forged': unknown key",
        ),
        ("\ufeffversion = 1", "web.toml: starts with a byte-order mark"),
        ("version = 1\nx = " + "[" * 3000 + "]" * 3000, "web.toml: not valid TOML: nested too"),
        ("version = 1\nx = 1" + "0" * 5000, "web.toml: not valid TOML: "),
        ("version = 1\n" + ".".join(["a"] * 20000) + " = 1", "web.toml: line 2: a key of more"),
        ("version = 1\nsecurity = [", "web.toml: not valid TOML: "),
    ],
)
def test_each_mistake_names_the_file_the_key_path_and_the_value(text, message):
    with pytest.raises(PolicyError) as caught:
        loads(text, name="web.toml")
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"version": 1, "version": 1}', "web.json: not valid JSON: key 'version' given twice"),
        ('{"version": 1, "run": {"timeout": NaN}}', "web.json: not valid JSON: NaN is not a"),
        ("[1]", "web.json: expected an object of keys, got list"),
        ('{"version": 1, "run": {"env": {"A": "\\ud800"}}}', "web.json: run.env.A: not Unicode"),
        ('{"version": 1, "x": ' + "[" * 100000 + "]" * 100000 + "}", "web.json: not valid JSON"),
        ('{"version": 1, "confinement": null}', None),
        (
            '{"version": 1, "cgroups": {"memory": null, "fail_on_error": false}}',
            None,
        ),  # null: JSON may say the default
    ],
)
def test_json_mistakes(text, message):
    if message is None:
        loads(text, fmt="json", name="web.json")  # null: the default, as JSON may say it
        return
    with pytest.raises(PolicyError) as caught:
        loads(text, fmt="json", name="web.json")
    assert str(caught.value).startswith(message), str(caught.value)


def test_text_a_file_cannot_hold_is_refused_on_writing_not_dropped():
    doc = PolicyFile(run=RunSettings(env=(("A", "\udcff"),)))
    for fmt in ("toml", "json"):
        with pytest.raises(PolicyError, match=r"policy: run\.env\.A: not Unicode text"):
            dumps(doc, fmt)


def test_the_profiles_hold_exactly_what_the_readme_says():
    strict = profile("strict")
    assert strict.policy == Policy(
        security=SecurityConfig(drop_all_caps=True, no_new_privs=True),
        rlimits=RlimitConfig(disable_core_dumps=True),
        confinement=Confinement(syscalls=SyscallFilter(default=True), namespaces=["net"]),
    )
    assert strict.run == RunSettings(env_policy="clear")
    service = profile("service")
    assert service.policy == Policy(
        security=SecurityConfig(
            drop_all_caps=True, keep_caps=["NET_BIND_SERVICE"], no_new_privs=True
        ),
        rlimits=RlimitConfig(disable_core_dumps=True),
        confinement=Confinement(syscalls=SyscallFilter(default=True)),
    )
    assert service.run == strict.run
    assert profile("none") == PolicyFile()
    assert list(PROFILES) == ["strict", "service", "none"]
    with pytest.raises(PolicyError, match="profile: 'lax' is not a profile"):
        profile("lax")


def test_merge_tables_key_by_key_and_replace_the_rest():
    base = {"security": {"drop_all_caps": True, "keep_caps": ["CHOWN"]}, "run": {"env": {"A": "1"}}}
    over = {"security": {"keep_caps": ["NET_RAW"]}, "run": {"env": {"B": "2"}}}
    assert merge(base, over) == {
        "security": {"drop_all_caps": True, "keep_caps": ["NET_RAW"]},
        "run": {"env": {"A": "1", "B": "2"}},
    }
    # A syscall filter merges too: a file over the strict profile keeps its default list.
    base = {"confinement": {"syscalls": {"default": True}, "umask": 63}}
    over = {"confinement": {"syscalls": {"allow": ["@default"]}}}
    assert merge(base, over) == {
        "confinement": {"syscalls": {"default": True, "allow": ["@default"]}, "umask": 63}
    }
    assert base == {"confinement": {"syscalls": {"default": True}, "umask": 63}}  # unchanged


def test_a_file_someone_else_can_change_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("version = 1\n")
    path.chmod(0o666)
    with pytest.raises(
        PolicyError, match=r"p\.toml: writable by its group or others \(mode 0666\)"
    ):
        load(path)
    path.chmod(0o644)
    assert load(path) == PolicyFile()
    fifo = tmp_path / "f.toml"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PolicyError, match=r"f\.toml: not a regular file"):
        load(fifo)  # refused at once: no writer is waited for
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(path, 4321, -1)
        with pytest.raises(PolicyError, match=r"owned by uid 4321, neither root nor this user"):
            load(path)


def test_group_writable_files_and_parent_directories_are_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("version = 1\n")
    path.chmod(0o620)
    with pytest.raises(PolicyError, match=r"writable by its group or others \(mode 0620\)"):
        load(path)
    path.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may swap the file for another
    (shared / "q.toml").write_text("version = 1\n")
    with pytest.raises(PolicyError, match=r"the directory \S+/shared on its path is writable"):
        load(shared / "q.toml")
    shared.chmod(0o1777)  # sticky, as /tmp is: only the file's owner may replace it
    assert load(shared / "q.toml") == PolicyFile()
    if os.geteuid() == 0:
        link = tmp_path / "l.toml"
        link.symlink_to(path)
        os.lchown(link, 4321, -1)  # someone else's link chooses which file is read
        with pytest.raises(PolicyError, match=r"the symlink \S+/l\.toml on its path is owned"):
            load(link)


def test_a_file_larger_than_a_policy_is_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("version = 1\n" + "# padding\n" * (1 << 19))
    with pytest.raises(PolicyError, match=r"big\.toml: larger than 4 MiB"):
        load(path)


def test_json_written_to_a_file_round_trips_text_toml_cannot_hold(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"version": 1, "run": {"env": {"A": "\\u0001 and \\udcff"}}}')
    # JSON escapes the surrogate, but a file of a policy must be Unicode: refused, named.
    with pytest.raises(PolicyError, match=r"run\.env\.A: not Unicode text"):
        load(path)
    toml = PolicyFile(run=RunSettings(env=(("A", "\x01\x1b\x7f"),)))
    assert "\\u0001\\u001b\\u007f" in dumps(toml)
    assert loads(dumps(toml)) == toml


def test_umask_is_written_as_octal_text():
    doc = PolicyFile(policy=Policy(confinement=Confinement(umask=0o027)))
    assert 'umask = "027"' in dumps(doc)
    assert loads(dumps(doc)) == doc
    assert loads(dumps(doc, "json"), fmt="json") == doc
