"""``hardexec run``'s confinement options: read alike by the fast reader and argparse, turned into
the expected :class:`Confinement`, and every bad value refused with exit 125 naming the option.

Nothing here spawns: valid command lines stop at :func:`hardexec.cli.options.request` (``main``
with a valid one would replace this process with the program).
"""

from __future__ import annotations

import pytest

from hardexec.cli.args import FLAGS, VALUES, parse_run
from hardexec.cli.options import request
from hardexec.confine import Confinement, PathRule, SyscallFilter

# Decimal digits to Python (str.isdigit, int), which an option must refuse, not read as 3 or 7
THREE, SEVEN = "\u0663", "\u0667"
CONFINE_VALUES = (
    *("--fs-ro", "--fs-rx", "--fs-rw", "--fs-rwx", "--tcp-bind", "--tcp-connect", "--syscalls"),
    *("--syscalls-allow", "--syscalls-deny", "--net", "--hostname", "--umask"),
)
CONFINE_FLAGS = ("--no-fs-deps", "--pid-ns", "--ipc-ns", "--uts-ns", "--best-effort")


def _argparse_reading(args):
    from hardexec.cli.parser import parser

    ns, extras = parser()[0].parse_known_args(args)
    assert not extras
    return vars(ns)


def test_every_confinement_option_is_in_the_fast_readers_table():
    assert set(CONFINE_VALUES) <= set(VALUES)
    assert set(CONFINE_FLAGS) <= set(FLAGS)


@pytest.mark.parametrize(
    "args",
    [
        [
            "run",
            "--fs-ro",
            "/a",
            "--fs-ro=/b",
            "--fs-rx",
            "/c",
            "--fs-rw=/d",
            "--fs-rwx",
            "/e",
            "x",
        ],
        ["run", "--fs-ro", "rel/dir", "--no-fs-deps", "--", "x", "--fs-ro", "/y"],
        ["run", "--tcp-bind", "80,81", "--tcp-bind=82", "--tcp-connect", "443", "--", "x"],
        ["run", "--tcp-connect=443,80", "--tcp-connect", "8080", "x"],
        ["run", "--syscalls", "default", "--syscalls-allow=read,write", "x"],
        ["run", "--syscalls-deny", "ptrace:EPERM", "--syscalls-deny=mount,@swap", "x"],
        ["run", "--net", "none", "--hostname=box", "--umask", "077", "x"],
        ["run", "--net=none", "--hostname", "a=b", "--umask=0", "--umask", "022", "x"],
        ["run", "--pid-ns", "--ipc-ns", "--uts-ns", "--best-effort", "--", "x"],
        ["run", "--hostname", "a", "--hostname", "b", "--net", "bogus", "x"],  # the last wins
        ["run", "--fs-ro", "", "--tcp-bind=", "--umask", "", "x"],  # empty values are values
        ["run", "--umask", "077", "cmd", "--umask", "1"],  # after the command: its own
        ["run", "--drop-all-caps", "--fs-rx", "/usr", "--syscalls=default", "--cgroup", "x"],
    ],
)
def test_the_fast_reader_reads_confinement_options_like_argparse(args):
    fast = parse_run(args[1:])
    assert fast is not None
    assert vars(fast) == _argparse_reading(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--umask"],
        ["--hostname", "--pid-ns", "x"],  # a value that looks like an option
        ["--tcp-bind", "-1", "x"],
        ["--pid-ns=1", "x"],  # a flag with a value
        ["--best-effort=yes", "x"],
        ["--fs", "/x", "x"],  # an abbreviation: argparse's to accept or refuse
        ["--host", "box", "x"],
        ["--fs-ro"],
    ],
)
def test_the_fast_reader_defers_the_rest_to_argparse(args):
    assert parse_run(args) is None


def test_argparse_reads_an_abbreviation_the_fast_reader_deferred():
    assert _argparse_reading(["run", "--host", "box", "x"])["hostname"] == "box"


# ---- request(): the options → the policy's Confinement --------------------------------------


def confinement(*options, argv=("x",)):
    ns = parse_run([*options, "--", *argv])
    assert ns is not None
    return request(ns).policy.confinement


def test_no_confinement_option_no_confinement():
    assert confinement() is None
    assert confinement("--drop-all-caps", "--no-new-privs") is None


def test_fs_rules_by_access_word_each_in_the_order_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = confinement(
        *("--fs-rw", "/d", "--fs-ro", "/b", "--fs-ro=/a", "--fs-rx", "/c"),
        *("--fs-rwx", "/e", "--fs-rw", "rel"),
    )
    assert c.fs == (
        PathRule("/b", "ro"),
        PathRule("/a", "ro"),
        PathRule("/c", "rx"),
        PathRule("/d", "rw"),
        PathRule(str(tmp_path / "rel"), "rw"),  # absolute, from the current directory
        PathRule("/e", "rwx"),
    )
    assert c.fs_dependencies is True
    assert c == Confinement(fs=c.fs)  # nothing else


def test_no_fs_deps_turns_the_dependencies_off():
    c = confinement("--fs-ro", "/srv", "--no-fs-deps")
    assert (c.fs, c.fs_dependencies) == ((PathRule("/srv"),), False)


def test_ports_from_comma_lists_and_repeats():
    c = confinement(
        *("--tcp-bind", "8080,80", "--tcp-bind=81", "--tcp-bind", "80"),
        *("--tcp-connect", "443,443", "--tcp-connect=0,65535", "--tcp-connect", "0080"),
    )
    assert c.tcp_bind == (80, 81, 8080)
    assert c.tcp_connect == (0, 80, 443, 65535)
    assert c == Confinement(tcp_bind=[80, 81, 8080], tcp_connect=[0, 80, 443, 65535])


@pytest.mark.parametrize(
    ("options", "namespaces", "hostname"),
    [
        (["--net", "none"], ("net",), None),
        (["--net=none"], ("net",), None),
        (["--pid-ns"], ("pid",), None),
        (["--ipc-ns"], ("ipc",), None),
        (["--uts-ns"], ("uts",), None),
        (["--hostname", "box"], ("uts",), "box"),  # implies the uts namespace
        (["--hostname=box-1.example", "--uts-ns"], ("uts",), "box-1.example"),
        (["--uts-ns", "--pid-ns", "--net", "none", "--ipc-ns"], ("net", "pid", "ipc", "uts"), None),
    ],
)
def test_namespaces(options, namespaces, hostname):
    c = confinement(*options)
    assert (c.namespaces, c.hostname) == (namespaces, hostname)
    assert c == Confinement(namespaces=namespaces, hostname=hostname)


@pytest.mark.parametrize(
    ("text", "umask"),
    [("077", 0o77), ("0", 0), ("7", 7), ("0777", 0o777), ("777", 0o777), ("022", 0o22)],
)
def test_umask_is_octal(text, umask):
    c = confinement("--umask", text)
    assert c == Confinement(umask=umask)
    assert c.umask == umask and not c.is_empty()


def test_syscall_options():
    c = confinement("--syscalls", "default")
    assert c.syscalls == SyscallFilter(default=True)
    c = confinement(
        "--syscalls-allow", "read,write", "--syscalls-allow=exit", "--syscalls-deny=ptrace"
    )
    assert c.syscalls == SyscallFilter(allow=["read", "write", "exit"], deny=["ptrace"])
    c = confinement("--syscalls-deny", "ptrace:EACCES,mount", "--syscalls", "default")
    assert c.syscalls == SyscallFilter(deny=["ptrace:EACCES", "mount"], default=True)


def test_a_filter_is_supervised_so_its_denials_are_counted():
    ns = parse_run(["--syscalls-deny", "ptrace", "--", "x"])
    assert request(ns).supervise is True
    ns = parse_run(["--fs-ro", "/srv", "--net", "none", "--umask", "077", "--", "x"])
    assert request(ns).supervise is False  # exec'd: nothing to count


def test_best_effort_goes_to_the_confinement_and_the_request():
    ns = parse_run(["--best-effort", "--tcp-bind", "80", "--", "x"])
    req = request(ns)
    assert req.best_effort is True
    assert req.policy.confinement == Confinement(tcp_bind=[80], best_effort=True)
    assert req.policy.cgroups is None


def test_every_option_at_once():
    c = confinement(
        *("--fs-ro", "/srv", "--fs-rx=/usr", "--no-fs-deps", "--tcp-bind", "8080"),
        *("--tcp-connect", "443", "--syscalls", "default", "--syscalls-deny", "ptrace"),
        *("--net", "none", "--pid-ns", "--ipc-ns", "--hostname", "box", "--umask", "027"),
        "--best-effort",
    )
    assert c == Confinement(
        fs=[("/srv", "ro"), ("/usr", "rx")],
        fs_dependencies=False,
        tcp_bind=[8080],
        tcp_connect=[443],
        syscalls=SyscallFilter(deny=["ptrace"], default=True),
        namespaces=["net", "pid", "ipc", "uts"],
        hostname="box",
        umask=0o27,
        best_effort=True,
    )


# ---- bad values: exit 125, one line naming the option ----------------------------------------

REFUSED = [
    (["--tcp-bind", "80,,81"], "--tcp-bind: '80,,81' has an empty item"),
    (["--tcp-bind", ""], "--tcp-bind: '' has an empty item"),
    (["--tcp-bind", "80,"], "--tcp-bind: '80,' has an empty item"),
    (["--tcp-bind", "65536"], "--tcp-bind: '65536' is not a TCP port (0..65535)"),
    (["--tcp-bind=-1"], "--tcp-bind: '-1' is not a TCP port (0..65535)"),
    (["--tcp-bind", " 80"], "--tcp-bind: ' 80' is not a TCP port (0..65535)"),
    (["--tcp-bind", "0x50"], "--tcp-bind: '0x50' is not a TCP port (0..65535)"),
    (["--tcp-connect", "http"], "--tcp-connect: 'http' is not a TCP port (0..65535)"),
    (["--tcp-connect", "443", "--tcp-connect", "1e3"], "--tcp-connect: '1e3' is not a TCP port"),
    (["--tcp-connect", THREE], f"--tcp-connect: {THREE!r} is not a TCP port (0..65535)"),
    (["--umask", "0o77"], "--umask: '0o77' is not an octal mode 000..777"),
    (["--umask", "1000"], "--umask: '1000' is not an octal mode 000..777"),
    (["--umask", "00777"], "--umask: '00777' is not an octal mode 000..777"),
    (["--umask", "8"], "--umask: '8' is not an octal mode 000..777"),
    (["--umask", ""], "--umask: '' is not an octal mode 000..777"),
    (["--umask=-1"], "--umask: '-1' is not an octal mode 000..777"),
    (["--umask", " 77"], "--umask: ' 77' is not an octal mode 000..777"),
    (["--umask", SEVEN], f"--umask: {SEVEN!r} is not an octal mode 000..777"),
    (["--net", "host"], "--net: 'host': only 'none' (a namespace with only a loopback) is offered"),
    (["--net=None"], "--net: 'None': only 'none'"),
    (["--syscalls", "strict"], "--syscalls: 'strict': the only list is 'default'"),
    (
        ["--syscalls-deny", "ptrac"],
        "--syscalls-deny: unknown syscall 'ptrac' (did you mean ptrace?)",
    ),
    (["--syscalls-deny", "ptrace,,mount"], "--syscalls-deny: 'ptrace,,mount' has an empty item"),
    (["--syscalls-deny", "ptrace:EBOGUS"], "--syscalls-deny: unknown action 'EBOGUS'"),
    (["--syscalls-allow", "read,,write"], "--syscalls-allow: 'read,,write' has an empty item"),
    (["--syscalls-allow", ""], "--syscalls-allow: '' has an empty item"),
    (["--hostname", "bad_name"], "--hostname: 'bad_name' is not a host name (1..64 letters,"),
    (["--hostname", ""], "--hostname: '' is not a host name"),
    (["--hostname", "h" * 65], "--hostname: 'hhhh"),
    (["--hostname", "caf\u00e9"], "--hostname: 'caf\u00e9' is not a host name"),
    (["--hostname", "a\0"], "--hostname: 'a\\x00' contains a NUL byte"),
    (["--fs-ro", ""], "--fs-ro: the path is empty"),
    (["--fs-rx", ""], "--fs-rx: the path is empty"),
    (["--fs-rw", ""], "--fs-rw: the path is empty"),
    (["--fs-rwx", "/srv", "--fs-rwx", ""], "--fs-rwx: the path is empty"),
    (["--fs-rx", "/a\0b"], "--fs-rx: '/a\\x00b' contains a NUL byte"),
    (["--no-fs-deps"], "--no-fs-deps: no --fs-* rule is given"),
    (["--no-fs-deps", "--tcp-bind", "80"], "--no-fs-deps: no --fs-* rule is given"),
    (["--best-effort"], "--best-effort: no cgroup (--memory, --pids, --cpus, --cpu-max, "),
    (["--best-effort", "--no-new-privs"], "--best-effort: no cgroup"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_a_bad_value_exits_125_naming_the_option(args, message, capsys):
    ns = parse_run([*args, "--", "/nonexistent/never-run"])
    assert ns is not None
    with pytest.raises(SystemExit) as stop:
        request(ns)
    assert stop.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith("hardexec: " + message), err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pid-ns=1"], "argument --pid-ns: ignored explicit argument '1'"),
        (["--best-effort=yes"], "argument --best-effort: ignored explicit argument 'yes'"),
        (["--umask"], "argument --umask: expected one argument"),
        (["--hostname", "--pid-ns"], "argument --hostname: expected one argument"),
        (["--fs", "/x"], "ambiguous option: --fs could match"),
        (["--tcp-bind", "-1"], "--tcp-bind: '-1' is not a TCP port (0..65535)"),
        (["--host", "bad_name"], "--hostname: 'bad_name' is not a host name"),
    ],
)
def test_what_argparse_reads_is_refused_the_same_way(args, message, capsys):
    from hardexec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", *args, "--", "/nonexistent/never-run"])
    assert stop.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith("hardexec: " + message), err
    assert err.count("\n") == 1, err
