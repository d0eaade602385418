"""The confinement half of a policy: validation, normal forms, the parent's decisions, the stage's
options.

``Confinement``, ``PathRule`` and ``SyscallFilter`` refuse every bad value with a PolicyError
naming the field and the value; ``confine.compile.confine()`` decides, for this kernel and this
launcher (both monkeypatched here), what the stage is asked to do and what is refused or left
out with a warning; ``Plan.stage_args`` turns that into the stage's options, in order.
"""

from __future__ import annotations

import errno
import os

import pytest

from hardexec import Policy, SecurityConfig
from hardexec._record import FrozenInstanceError
from hardexec.caps import CapSet
from hardexec.confine import Confinement, PathRule, SyscallFilter, compile, landlock
from hardexec.confine.compile import Confined, confine
from hardexec.confine.landlock import Ruleset, fs_rights
from hardexec.confine.seccomp import compile_filter
from hardexec.errors import PolicyError, StageError, StageWarning
from hardexec.plan import Plan, compile_plan
from hardexec.policy import Identity

CAP_SYS_ADMIN = 21
ALL_CAPS = (1 << 41) - 1  # 0..40
NO_SYS_ADMIN = ALL_CAPS & ~(1 << CAP_SYS_ADMIN)

# ---- validation: every bad value is a PolicyError naming the field and the value -------------

BAD = [
    # PathRule
    (lambda: PathRule("/srv", "r"), "path_rule.access: 'r' is not one of ro, rx, rw, rwx"),
    (lambda: PathRule("/srv", "RO"), "path_rule.access: 'RO' is not one of ro, rx, rw, rwx"),
    (lambda: PathRule("/srv", None), "path_rule.access: None is not one of ro, rx, rw, rwx"),
    (lambda: PathRule("/a\0b"), "path_rule.path: the path '/a\\x00b' contains a NUL byte"),
    (lambda: PathRule(b"/a\0b"), "path_rule.path: the path '/a\\x00b' contains a NUL byte"),
    (lambda: PathRule(""), "path_rule.path: the path is empty"),
    (lambda: PathRule(b""), "path_rule.path: the path is empty"),
    (lambda: PathRule(5), "path_rule.path: expected a path, got 5"),
    (lambda: PathRule(None), "path_rule.path: expected a path, got None"),
    # Confinement.fs
    (lambda: Confinement(fs="/srv"), "confinement.fs: expected a list of path rules, got '/srv'"),
    (lambda: Confinement(fs=b"/srv"), "confinement.fs: expected a list of path rules, got b'/srv'"),
    (lambda: Confinement(fs=None), "confinement.fs: expected a list of path rules, got None"),
    (
        lambda: Confinement(fs=PathRule("/srv")),
        "confinement.fs: expected a list of path rules, got PathRule(path='/srv', access='ro')",
    ),
    (
        lambda: Confinement(fs=["/srv"]),
        "confinement.fs[0]: expected a PathRule or (path, access), got '/srv'",
    ),
    (
        lambda: Confinement(fs=[PathRule("/a"), ("/srv",)]),
        "confinement.fs[1]: expected a PathRule or (path, access), got ('/srv',)",
    ),
    (
        lambda: Confinement(fs=[("/srv", "ro", "x")]),
        "confinement.fs[0]: expected a PathRule or (path, access), got ('/srv', 'ro', 'x')",
    ),
    (
        lambda: Confinement(fs=[("/srv", "write")]),
        "confinement.fs[0]: path_rule.access: 'write' is not one of ro, rx, rw, rwx",
    ),
    (lambda: Confinement(fs=[("", "ro")]), "confinement.fs[0]: path_rule.path: the path is empty"),
    (
        lambda: Confinement(fs=[("/a", "ro"), ("/b\0", "rw")]),
        "confinement.fs[1]: path_rule.path: the path '/b\\x00' contains a NUL byte",
    ),
    (lambda: Confinement(fs=[("/a", "ro")] * 4097), "confinement.fs: 4097 rules, at most 4096"),
    # flags
    (
        lambda: Confinement(fs_dependencies=1),
        "confinement.fs_dependencies: expected True or False, got 1",
    ),
    (
        lambda: Confinement(best_effort="yes"),
        "confinement.best_effort: expected True or False, got 'yes'",
    ),
    # ports
    (
        lambda: Confinement(tcp_bind=[65536]),
        "confinement.tcp_bind[0]: expected a TCP port 0..65535, got 65536",
    ),
    (
        lambda: Confinement(tcp_bind=[80, -1]),
        "confinement.tcp_bind[1]: expected a TCP port 0..65535, got -1",
    ),
    (
        lambda: Confinement(tcp_connect=[True]),
        "confinement.tcp_connect[0]: expected a TCP port 0..65535, got True",
    ),
    (
        lambda: Confinement(tcp_connect=False),
        "confinement.tcp_connect[0]: expected a TCP port 0..65535, got False",
    ),
    (
        lambda: Confinement(tcp_connect=["443"]),
        "confinement.tcp_connect[0]: expected a TCP port 0..65535, got '443'",
    ),
    (
        lambda: Confinement(tcp_connect=[443.0]),
        "confinement.tcp_connect[0]: expected a TCP port 0..65535, got 443.0",
    ),
    (
        lambda: Confinement(tcp_bind="8080"),
        "confinement.tcp_bind: expected a list of ports, got '8080'",
    ),
    (
        lambda: Confinement(tcp_bind=None),
        "confinement.tcp_bind: expected a list of ports, got None",
    ),
    # syscalls
    (
        lambda: Confinement(syscalls="default"),
        "confinement.syscalls: expected a SyscallFilter, got 'default'",
    ),
    (SyscallFilter, "syscalls: nothing to filter (give allow, deny or default=True)"),
    (lambda: SyscallFilter(allow="read"), "syscalls.allow: expected a list of names, got 'read'"),
    (lambda: SyscallFilter(deny=None), "syscalls.deny: expected a list of names, got None"),
    (lambda: SyscallFilter(deny=5), "syscalls.deny: expected a list of names, got 5"),
    (lambda: SyscallFilter(allow=["read", 5]), "syscalls.allow[1]: expected a name, got 5"),
    (lambda: SyscallFilter(deny=[""]), "syscalls.deny[0]: expected a name, got ''"),
    (lambda: SyscallFilter(default="yes"), "syscalls.default: expected True or False, got 'yes'"),
    (lambda: SyscallFilter(deny=["ptrac"]), "syscalls.deny[0]: unknown syscall 'ptrac'"),
    # namespaces and the host name
    (
        lambda: Confinement(namespaces=["mnt"]),
        "confinement.namespaces[0]: 'mnt' is not one of net, pid, ipc, uts",
    ),
    (
        lambda: Confinement(namespaces=["net", "user"]),
        "confinement.namespaces[1]: 'user' is not one of net, pid, ipc, uts",
    ),
    (
        lambda: Confinement(namespaces=["NET"]),
        "confinement.namespaces[0]: 'NET' is not one of net, pid, ipc, uts",
    ),
    (lambda: Confinement(namespaces=None), "confinement.namespaces: expected a list, got None"),
    (lambda: Confinement(namespaces=3), "confinement.namespaces: expected a list, got 3"),
    (
        lambda: Confinement(hostname="box"),
        "confinement.hostname: needs the uts namespace (namespaces=['uts'])",
    ),
    (
        lambda: Confinement(namespaces=["net"], hostname="box"),
        "confinement.hostname: needs the uts namespace (namespaces=['uts'])",
    ),
    *[
        (
            lambda name=name: Confinement(namespaces=["uts"], hostname=name),
            f"confinement.hostname: {name!r} is not a host name (1..64 letters, digits, '-' "
            "and '.')",
        )
        for name in ("", "two words", "a_b", "caf\u00e9", "\u0661\u0662", "x\0", b"box", 5)
    ],
    (
        lambda: Confinement(namespaces=["uts"], hostname="h" * 65),
        "confinement.hostname: '" + "h" * 56 + "... is not a host name",
    ),
    # umask
    *[
        (
            lambda value=value: Confinement(umask=value),
            f"confinement.umask: expected 0o000..0o777, got {value!r}",
        )
        for value in (0o1000, -1, True, "077", 0.5, 2**64)
    ],
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=[m for _, m in BAD])
def test_every_bad_value_is_a_policy_error_naming_the_field_and_value(make, message):
    with pytest.raises(PolicyError) as caught:
        make()
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ValueError)


# ---- normal forms ----------------------------------------------------------------------------


def test_a_relative_path_is_made_absolute_when_the_rule_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = PathRule("data/sub", "rw")
    monkeypatch.chdir("/")
    assert rule == PathRule(str(tmp_path / "data" / "sub"), "rw")
    assert rule.path == f"{tmp_path}/data/sub"
    monkeypatch.chdir(tmp_path)
    assert PathRule("../x/./y").path == f"{tmp_path}/../x/./y"  # joined, not normalised


def test_paths_from_bytes_and_path_objects_are_strings(tmp_path):
    assert PathRule(b"/srv/caf\xc3\xa9\xff").path == "/srv/caf\u00e9\udcff"  # os.fsdecode
    assert PathRule(tmp_path).path == str(tmp_path)
    assert PathRule("/srv/data/").path == "/srv/data/"  # as given: the kernel resolves it
    assert PathRule("/srv/./data").path == "/srv/./data"
    assert PathRule("/srv").access == "ro"  # the default


def test_a_rule_through_a_symlink_and_dotdot_names_what_the_kernel_resolves(tmp_path):
    """Joined, never normalised: '..' after a symlink is the symlink target's parent to the
    kernel (and to the stage's open of the path), not the textual one."""
    (tmp_path / "real" / "bin").mkdir(parents=True)
    (tmp_path / "real" / "data").mkdir()
    (tmp_path / "data").mkdir()  # what a textual '..' would name instead
    (tmp_path / "link").symlink_to(tmp_path / "real" / "bin")
    asked = f"{tmp_path}/link/../data"  # the kernel: real/data
    assert os.path.samefile(asked, tmp_path / "real" / "data")
    assert os.path.samefile(PathRule(asked).path, asked), PathRule(asked).path


def test_ports_are_deduplicated_and_sorted_and_one_port_is_a_list():
    c = Confinement(tcp_bind=[8080, 80, 8080, 0, 65535], tcp_connect=(443, 80, 443))
    assert c.tcp_bind == (0, 80, 8080, 65535)
    assert c.tcp_connect == (80, 443)
    assert Confinement(tcp_bind=8080).tcp_bind == (8080,)
    assert Confinement(tcp_connect=iter([2, 1])).tcp_connect == (1, 2)


def test_namespaces_are_put_in_one_order_without_repeats():
    c = Confinement(namespaces=["uts", "net", "pid", "ipc", "net"])
    assert c.namespaces == ("net", "pid", "ipc", "uts")
    assert Confinement(namespaces="pid").namespaces == ("pid",)
    assert Confinement(namespaces=("uts",), hostname="h" * 64).hostname == "h" * 64


def test_fs_rules_keep_their_order_and_pairs_become_path_rules():
    c = Confinement(fs=[("/b", "rw"), PathRule("/a"), ["/c", "rx"]])
    assert c.fs == (PathRule("/b", "rw"), PathRule("/a", "ro"), PathRule("/c", "rx"))
    assert isinstance(c.fs, tuple)


def test_syscall_lists_become_tuples():
    f = SyscallFilter(allow=["read", "write"], deny=["ptrace:EACCES"])
    assert (f.allow, f.deny, f.default) == (("read", "write"), ("ptrace:EACCES",), False)
    assert SyscallFilter(allow=[]).allow == ()  # the @default group alone


@pytest.mark.parametrize(
    ("confinement", "empty"),
    [
        (Confinement(), True),
        (Confinement(best_effort=True), True),
        (Confinement(fs_dependencies=False), True),
        (Confinement(fs=[("/srv", "ro")]), False),
        (Confinement(tcp_bind=[80]), False),
        (Confinement(tcp_connect=[0]), False),
        (Confinement(syscalls=SyscallFilter(deny=["ptrace"])), False),
        (Confinement(namespaces=["ipc"]), False),
        (Confinement(umask=0), False),  # umask 0 is a umask
        (Confinement(umask=0o077), False),
    ],
)
def test_is_empty(confinement, empty):
    assert confinement.is_empty() is empty
    assert confinement.landlock is bool(
        confinement.fs or confinement.tcp_bind or confinement.tcp_connect
    )


def test_equal_when_the_normal_forms_are_and_hashable():
    a = Confinement(
        fs=[("/srv", "ro")],
        tcp_bind=[81, 80, 80],
        namespaces=["uts", "net"],
        hostname="box",
        syscalls=SyscallFilter(deny=["ptrace"]),
        umask=0o22,
    )
    b = Confinement(
        fs=(PathRule("/srv"),),
        tcp_bind=(80, 81),
        namespaces=("net", "uts"),
        hostname="box",
        syscalls=SyscallFilter(deny=("ptrace",)),
        umask=18,
    )
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Confinement(umask=0o22)}) == 2
    assert a != Confinement(fs=[("/srv", "rw")])
    assert PathRule("/srv/") != PathRule("/srv")  # paths are compared as given
    assert a != b.__class__(**{**_fields(b), "best_effort": True})
    assert PathRule("/x", "ro") != PathRule("/x", "rw")
    assert hash(PathRule("/x")) == hash(PathRule("/x", "ro"))
    assert SyscallFilter(deny=["ptrace"]) != SyscallFilter(deny=["mount"])
    assert hash(SyscallFilter(allow=["read"])) == hash(SyscallFilter(allow=("read",)))


def _fields(c):
    from hardexec._record import fields

    return {f.name: getattr(c, f.name) for f in fields(c) if f.init}


def test_frozen():
    c = Confinement(umask=0o22)
    with pytest.raises(FrozenInstanceError):
        c.umask = 0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        PathRule("/x").access = "rw"  # type: ignore[misc]


# ---- confine(): this kernel and this launcher, monkeypatched ---------------------------------


@pytest.fixture
def host(monkeypatch):
    """A kernel with Landlock ABI 7 and every seccomp action; a launcher with every capability.
    ``host(abi=, actions=, eff=, prm=, proc=)`` changes any of them; ``proc`` maps a /proc/sys
    file to what it reads."""
    state = {"abi": 7, "actions": {"allow", "errno", "kill_process", "user_notif"}}
    state.update(eff=ALL_CAPS, prm=ALL_CAPS, proc={})
    monkeypatch.setattr(compile, "_recent", {})  # confine()'s one-second answers
    monkeypatch.setattr(landlock, "abi", lambda: state["abi"])
    monkeypatch.setattr(compile, "seccomp_actions", lambda: frozenset(state["actions"]))
    monkeypatch.setattr(compile, "_own_caps", lambda: (state["eff"], state["prm"]))
    monkeypatch.setattr(compile, "_read", state["proc"].get)

    def change(proc=None, **values):
        state.update(values)
        if proc is not None:
            state["proc"].clear()
            state["proc"].update(proc)

    return change


TCP = Confinement(tcp_connect=[443])  # a Landlock ruleset, no path to look at
NOTE = (
    "no_new_privs is implied: Landlock and seccomp need it when the program does not hold "
    "CAP_SYS_ADMIN"
)


def _confine(security=None, confinement=TCP, **kwargs):
    policy = Policy(security=security or SecurityConfig(), confinement=confinement)
    return confine(policy, **kwargs)


@pytest.mark.parametrize(
    ("security", "caps", "implied"),
    [
        # the capability drop leaves no CAP_SYS_ADMIN: implied
        (SecurityConfig(drop_all_caps=True), (ALL_CAPS, ALL_CAPS), True),
        # ... unless it is kept, and the launcher has it to keep
        (SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"]), (ALL_CAPS, ALL_CAPS), False),
        (SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"]), (0, NO_SYS_ADMIN), True),
        (SecurityConfig(drop_all_caps=True, keep_caps=["NET_ADMIN"]), (ALL_CAPS, ALL_CAPS), True),
        # root without a drop keeps CAP_SYS_ADMIN: not implied
        (SecurityConfig(), (ALL_CAPS, ALL_CAPS), False),
        (SecurityConfig(user=0), (ALL_CAPS, ALL_CAPS), False),
        # a launcher without it, or a switch away from uid 0 (which clears the sets): implied
        (SecurityConfig(), (NO_SYS_ADMIN, ALL_CAPS), True),
        (SecurityConfig(user="nobody"), (ALL_CAPS, ALL_CAPS), True),
        (SecurityConfig(user=65534, group=65534), (ALL_CAPS, ALL_CAPS), True),
        # asked for already: the plan says --nnp itself, nothing is implied
        (SecurityConfig(drop_all_caps=True, no_new_privs=True), (ALL_CAPS, ALL_CAPS), False),
        (SecurityConfig(user=65534, no_new_privs=True), (ALL_CAPS, ALL_CAPS), False),
    ],
)
def test_no_new_privs_is_implied_only_when_the_program_will_not_hold_cap_sys_admin(
    host, security, caps, implied
):
    host(eff=caps[0], prm=caps[1])
    for confinement in (TCP, Confinement(syscalls=SyscallFilter(deny=["ptrace"]))):
        c = _confine(security, confinement)
        assert c.implied_nnp is implied
        assert c.notes == ((NOTE,) if implied else ())


def test_no_new_privs_is_not_implied_without_landlock_or_seccomp(host):
    c = _confine(SecurityConfig(drop_all_caps=True), Confinement(namespaces=["net"], umask=0))
    assert (c.implied_nnp, c.notes, c.ruleset, c.filter) == (False, (), None, None)
    assert (c.unshare, c.umask) == (("net",), 0)


def test_a_user_namespace_is_added_when_the_launcher_lacks_cap_sys_admin(host):
    confinement = Confinement(namespaces=["uts", "net"], hostname="box", tcp_bind=[80])
    c = _confine(confinement=confinement)
    assert (c.unshare, c.hostname) == (("net", "uts"), "box")
    host(eff=NO_SYS_ADMIN)
    c = _confine(confinement=confinement)
    assert (c.unshare, c.hostname) == (("user", "net", "uts"), "box")
    # everything is the program's in its user namespace, so no_new_privs only with a drop
    assert c.implied_nnp is False
    assert _confine(SecurityConfig(drop_all_caps=True), confinement).implied_nnp is True
    kept = SecurityConfig(drop_all_caps=True, keep_caps=["SYS_ADMIN"])
    assert _confine(kept, confinement).implied_nnp is False


def test_a_namespace_the_host_refuses_fails_closed_or_is_left_out(host):
    host(proc={"/proc/sys/user/max_ipc_namespaces": "0"})
    confinement = Confinement(namespaces=["ipc", "uts"], hostname="box")
    with pytest.raises(StageError) as caught:
        _confine(confinement=confinement)
    assert (caught.value.step, caught.value.errno) == ("unshare", errno.EOPNOTSUPP)
    assert str(caught.value) == (
        "unshare failed: [Errno 95] Operation not supported (the ipc namespace: cannot be "
        "enforced here, user.max_ipc_namespaces is 0 on this host (best_effort=True runs "
        "without it))"
    )
    c = _confine(
        confinement=Confinement(namespaces=["ipc", "uts"], hostname="box", best_effort=True)
    )
    assert (c.unshare, c.hostname) == (("uts",), "box")
    [warning] = c.warnings
    assert (warning.step, warning.cause) == ("unshare", "user.max_ipc_namespaces is 0 on this host")
    assert (
        warning.detail
        == "the ipc namespace: not enforced, user.max_ipc_namespaces is 0 on this host"
    )


@pytest.mark.parametrize(
    "proc",
    [
        {"/proc/sys/user/max_user_namespaces": "0"},
        {"/proc/sys/kernel/unprivileged_userns_clone": "0"},
    ],
)
def test_without_the_user_namespace_no_other_namespace_can_be_made(host, proc):
    host(eff=NO_SYS_ADMIN, proc=proc)
    asked = {"namespaces": ["net", "uts"], "hostname": "box", "umask": 0o77}
    with pytest.raises(StageError, match="the user namespace: cannot be enforced here"):
        _confine(confinement=Confinement(**asked))
    c = _confine(confinement=Confinement(**asked, best_effort=True))
    assert (c.unshare, c.hostname, c.umask) == ((), None, 0o77)  # no host name without uts
    assert [w.step for w in c.warnings] == ["unshare"]
    assert "the user namespace: not enforced" in str(c.warnings[0])


def test_tcp_rules_below_abi_4_are_refused_or_left_out(host):
    host(abi=3)
    with pytest.raises(StageError) as caught:
        _confine(confinement=Confinement(tcp_bind=[8080]))
    assert (caught.value.step, caught.value.errno) == ("landlock", errno.EOPNOTSUPP)
    assert caught.value.detail == (
        "Landlock rules for TCP bind, TCP connect: cannot be enforced here, this kernel's "
        "Landlock ABI is 3 (best_effort=True runs without it)"
    )
    c = _confine(confinement=Confinement(tcp_bind=[8080], best_effort=True))
    assert c.ruleset is None  # nothing at all was enforceable
    assert c.implied_nnp is False  # nothing left needs it
    [warning] = c.warnings
    assert isinstance(warning, StageWarning)
    assert (warning.step, warning.errno) == ("landlock", errno.EOPNOTSUPP)
    assert warning.detail == (
        "Landlock rules for TCP bind, TCP connect: not enforced, this kernel's Landlock ABI is 3"
    )


def test_path_rules_below_abi_5_refuse_or_keep_what_the_kernel_enforces(host, tmp_path):
    host(abi=4)
    asked = {"fs": [(tmp_path, "ro")], "fs_dependencies": False}
    with pytest.raises(
        StageError, match=r"Landlock rules for ioctl on devices: cannot be enforced"
    ):
        _confine(confinement=Confinement(**asked))
    c = _confine(confinement=Confinement(**asked, best_effort=True))
    assert c.ruleset is not None and c.ruleset.handled_fs == fs_rights(4)
    assert c.ruleset.rules == ((str(tmp_path), landlock.FS_READ_FILE | landlock.FS_READ_DIR),)
    assert "ioctl on devices: not enforced, this kernel's Landlock ABI is 4" in str(c.warnings[0])
    assert c.implied_nnp is False  # root, no drop


def test_without_landlock_everything_of_it_is_refused_or_left_out(host, tmp_path):
    host(abi=0)
    asked = {"fs": [(tmp_path, "ro")], "tcp_bind": [80]}
    with pytest.raises(StageError) as caught:
        _confine(confinement=Confinement(**asked))
    assert caught.value.detail == (
        "the Landlock rules: cannot be enforced here, this kernel has no Landlock "
        "(best_effort=True runs without it)"
    )
    c = _confine(SecurityConfig(drop_all_caps=True), Confinement(**asked, best_effort=True))
    assert (c.ruleset, c.implied_nnp, c.notes) == (None, False, ())
    assert [w.cause for w in c.warnings] == ["this kernel has no Landlock"]


def test_the_latest_abi_enforces_everything_without_a_word(host, tmp_path):
    c = _confine(
        confinement=Confinement(fs=[(tmp_path, "rw")], tcp_bind=[80], fs_dependencies=False)
    )
    assert c.warnings == () and c.ruleset.unenforced == ()
    assert (c.ruleset.handled_fs, c.ruleset.handled_net) == (landlock.FS_ALL, landlock.NET_ALL)


def test_without_seccomp_a_filter_is_refused_or_left_out(host):
    host(actions=set())
    deny = SyscallFilter(deny=["ptrace"])
    with pytest.raises(StageError) as caught:
        _confine(confinement=Confinement(syscalls=deny))
    assert (caught.value.step, caught.value.detail) == (
        "seccomp",
        "the syscall filter: cannot be enforced here, this kernel has no seccomp "
        "(best_effort=True runs without it)",
    )
    c = _confine(SecurityConfig(drop_all_caps=True), Confinement(syscalls=deny, best_effort=True))
    assert (c.filter, c.notify, c.implied_nnp) == (None, False, False)
    assert [w.detail for w in c.warnings] == [
        "the syscall filter: not enforced, this kernel has no seccomp"
    ]


def test_the_listener_only_when_a_parent_listens_and_the_kernel_notifies(host):
    deny = Confinement(syscalls=SyscallFilter(deny=["ptrace"]))
    c = _confine(confinement=deny)
    assert (c.notify, c.warnings) == (True, ())
    assert c.filter == compile_filter(deny.syscalls, notify=True)
    c = _confine(confinement=deny, listen=False)  # hardexec execs the stage: nobody listens
    assert (c.notify, c.warnings) == (False, ())
    assert c.filter == compile_filter(deny.syscalls, notify=False)
    assert c.filter.fd_offset is None
    host(actions={"allow", "errno", "kill_process"})  # no user_notif: refused, not counted
    c = _confine(confinement=deny)
    assert c.notify is False and c.filter is not None
    [warning] = c.warnings
    assert warning.step == "seccomp"
    assert "refused but not counted" in warning.detail
    assert _confine(confinement=deny, listen=False).warnings == ()


@pytest.mark.parametrize(
    "syscalls",
    [SyscallFilter(deny=["sendmsg"]), SyscallFilter(allow=["read", "write"])],
    ids=["sendmsg-denied", "allow-list-without-sendmsg"],
)
def test_a_filter_refusing_sendmsg_gets_no_listener_and_says_so(host, syscalls):
    """The listener is handed over with a sendmsg the filter must let through: a filter that
    refuses sendmsg is installed without one (refused in the kernel, not counted)."""
    c = _confine(confinement=Confinement(syscalls=syscalls))
    assert (c.notify, c.warnings) == (False, ())
    assert c.filter == compile_filter(syscalls, notify=False)
    assert any("not counted" in note and "sendmsg" in note for note in c.notes), c.notes


def test_no_confinement_is_none(host):
    assert confine(Policy()) is None
    assert confine(Policy(confinement=Confinement())) is None
    assert confine(Policy(confinement=Confinement(best_effort=True))) is None


def test_umask_and_namespaces_alone_are_passed_as_they_are(host):
    c = _confine(confinement=Confinement(umask=0o27, namespaces=["pid"]))
    assert c == Confined(umask=0o27, unshare=("pid",))


def test_a_kernel_change_is_not_answered_from_the_cache(host):
    policy = Policy(confinement=Confinement(tcp_bind=[80], best_effort=True))
    first = confine(policy)
    assert confine(policy) is first  # the same policy object, within a second
    host(abi=3)
    assert confine(policy).ruleset is None and confine(policy) is not first


# ---- Plan.stage_args with a Confined -------------------------------------------------------


def _ruleset():
    return Ruleset(7, landlock.FS_ALL, 0, (("/srv", 12),), (), ())


def _plan(**kwargs):
    values = {
        "drop_caps": False,
        "keep": CapSet(),
        "strict": False,
        "no_new_privs": False,
        "identity": Identity(),
    }
    return Plan(**{**values, **kwargs})


def test_every_confinement_option_in_the_stages_order():
    plan = _plan(
        drop_caps=True,
        strict=True,
        identity=Identity(uid=65534, gid=65534, groups=()),
        rlimits=((7, 64),),
        cgroup_strict=True,
        die_with_parent=True,
        lock_securebits=True,
    )
    c = Confined(
        umask=0o27,
        unshare=("user", "net", "ipc", "uts", "pid"),
        hostname="box",
        ruleset=_ruleset(),
        filter=compile_filter(SyscallFilter(deny=["ptrace"]), notify=True),
        notify=True,
        implied_nnp=True,
    )
    args = plan.stage_args(
        3,
        "/usr/bin/prog",
        5,
        env_fd=4,
        parent=4321,
        ignore_signals=(13, 1),
        confined=c,
        landlock_fd=6,
        seccomp_fd=7,
        notify_fd=8,
    )
    assert args == [
        "--report-fd=3",
        "--env-fd=4",
        "--cgroup-fd=5",
        "--cgroup-strict",
        "--rlimit=7:64",
        "--umask=27",
        "--unshare=user,net,ipc,uts,pid",
        "--hostname=box",
        "--landlock-fd=6",
        "--uid=65534",
        "--gid=65534",
        "--clear-groups",
        "--drop-caps=0000000000000000",
        "--strict",
        "--lock-securebits",
        "--nnp",
        "--ignore-signals=1,13",
        "--die-with-parent=4321",
        "--seccomp-fd=7",
        "--seccomp-notify-fd=8",
        "--exec=/usr/bin/prog",
        "--",
    ]


@pytest.mark.parametrize(
    ("umask", "option"), [(0, "--umask=0"), (0o7, "--umask=7"), (0o777, "--umask=777")]
)
def test_the_umask_in_octal_digits(umask, option):
    assert _plan().stage_args(None, confined=Confined(umask=umask)) == [option, "--"]


def test_only_what_the_confinement_asks_for():
    plan = _plan()
    assert plan.stage_args(None, confined=None) == ["--"]
    assert plan.stage_args(None, confined=Confined()) == ["--"]
    assert plan.stage_args(None, confined=Confined(unshare=("pid",))) == ["--unshare=pid", "--"]
    assert plan.stage_args(None, confined=Confined(implied_nnp=True)) == ["--nnp", "--"]
    # asked for and implied: said once
    assert _plan(no_new_privs=True).stage_args(None, confined=Confined(implied_nnp=True)) == [
        "--nnp",
        "--",
    ]
    # a filter without a listener: no notify option, whatever fd is offered
    filt = compile_filter(SyscallFilter(deny=["ptrace"]), notify=False)
    args = plan.stage_args(None, confined=Confined(filter=filt), seccomp_fd=7, notify_fd=8)
    assert args == ["--seccomp-fd=7", "--"]
    # the fds are only asked for by what uses them
    assert plan.stage_args(None, confined=Confined(umask=1), landlock_fd=6, seccomp_fd=7) == [
        "--umask=1",
        "--",
    ]


def test_a_confined_without_its_fds_is_a_value_error():
    plan = _plan()
    with pytest.raises(ValueError, match="landlock_fd"):
        plan.stage_args(None, confined=Confined(ruleset=_ruleset()))
    notify = compile_filter(SyscallFilter(deny=["ptrace"]), notify=True)
    with pytest.raises(ValueError, match="seccomp_fd"):
        plan.stage_args(None, confined=Confined(filter=notify, notify=True), notify_fd=8)
    with pytest.raises(ValueError, match="notify_fd"):
        plan.stage_args(None, confined=Confined(filter=notify, notify=True), seccomp_fd=7)


def test_securebits_are_locked_for_a_uid_0_program_whose_caps_are_dropped():
    def locked(**security):
        return compile_plan(Policy(security=SecurityConfig(**security))).lock_securebits

    assert locked(drop_all_caps=True, user=0) is True
    assert locked(drop_all_caps=True, user=65534) is False
    assert locked(user=0) is False  # nothing dropped: root keeps root's powers, as asked
    assert locked(drop_all_caps=True) is (os.geteuid() == 0)
