"""Sizes at the command line."""

import pytest

from hardexec.cli import format_size, parse_size

# Decimal digits to Python (str.isdecimal, int), which an option must refuse, not read as 1, 3, 12
ONE, THREE, TWELVE = "\u0661", "\u0663", "\u0661\u0662"


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("10", 10), ("4K", 4096), ("64M", 64 << 20), ("2g", 2 << 30), ("1T", 1 << 40),
     ("256MiB", 256 << 20), ("10KB", 10 << 10), (" 8M ", 8 << 20)],
)  # fmt: skip
def test_parse_size(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1M", "12X", "1 M B", "0x10"])
def test_unparsable_sizes_exit_125_naming_the_option(text, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_size(text, "--fsize")
    assert stop.value.code == 125
    assert capsys.readouterr().err == (
        f"hardexec: --fsize: {text!r} is not a size (a whole number, then K, M, G or T if need "
        "be)\n"
    )


def test_format_size():
    sizes = (64 << 20, 1 << 30, 1536 << 10, 1536, 1000)
    assert [format_size(n) for n in sizes] == ["64M", "1G", "1536K", "1536", "1000"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpus", "inf"], "--cpus: 'inf' is not a number of CPUs (0.5, 2)"),
        (["--cpus", "nan"], "--cpus: 'nan' is not a number of CPUs (0.5, 2)"),
        (["--cpus", "1e308"], "--cpus: '1e308' is not a number of CPUs (0.5, 2)"),
        (["--cpus", "-1"], "--cpus: '-1' is not a number of CPUs (0.5, 2)"),
        (["--cpus", THREE], f"--cpus: {THREE!r} is not a number of CPUs (0.5, 2)"),
        (["--cpus", "9" * 400], "is more than cpu.max can hold (at most 92233720368)"),
        (["--cpus", "0.001"], "--cpus: '0.001' is less than cpu.max allows (0.01 CPU)"),
        (["--cpu-max", f"{THREE}/100000"], f"--cpu-max quota: {THREE!r} is not a whole number"),
        (["--nofile", THREE], f"--nofile: {THREE!r} is not a whole number"),
        (["--pids", THREE], f"--pids: {THREE!r} is not a whole number"),
        (["--memory", THREE + "M"], f"--memory: {THREE + 'M'!r} is not a size"),
        (["--fsize=-1M"], "--fsize: '-1M' is not a size"),
        (["--fsize", "-1M"], "argument --fsize: expected one argument; try 'hardexec run --help'"),
        (["--nofile", str(2**64)], f"--nofile: {2**64} is larger than {2**63 - 1}"),
        (["--user", ONE], f"--user: {ONE!r} has non-ASCII digits; give an id in 0-9 or a name"),
        (["--group", TWELVE], f"--group: {TWELVE!r} has non-ASCII digits"),
        (["--groups", "0," + ONE], f"--groups: {ONE!r} has non-ASCII digits"),
        (["--drop-all-caps", "--keep-cap", TWELVE], f"--keep-cap: {TWELVE!r} is not a capability"),
        (["--cgroup", "--cgroup-parent", "/" + "a" * 5000], "a path of 5001 bytes is longer"),
        (["--cgroup", "--cgroup-parent", "/" + "a" * 300], "--cgroup-parent: "),
        (["--user", "a\0b"], "--user: 'a\\x00b' contains a NUL byte"),
        (["--groups", "0\0"], "--groups: '0\\x00' contains a NUL byte"),
        (["--cgroup", "--cgroup-parent", "/sys\0"], "--cgroup-parent: '/sys\\x00' contains a NUL"),
        (["--memory", "1M\0"], "--memory: '1M\\x00' contains a NUL byte"),
    ],
)
def test_bad_input_is_one_line_and_125_never_a_traceback(args, message, capsys):
    from hardexec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", *args, "--", "/nonexistent/never-run"])
    assert stop.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith("hardexec: ") and err.count("\n") == 1, err
    assert message in err, err


def test_a_nul_in_the_command_is_refused(capsys):
    from hardexec.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", "--no-new-privs", "--", "echo", "a\0b"])
    assert stop.value.code == 125
    assert capsys.readouterr().err == (
        "hardexec: the command's argument 1 'a\\x00b' contains a NUL byte\n"
    )


def test_bare_hardexec_prints_usage_and_returns_2(capsys):
    from hardexec.cli import main

    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: hardexec") and "caps      list capabilities" in err


def test_keep_cap_beyond_the_kernels_last_is_named(capsys, monkeypatch, tmp_path):
    from hardexec.cli import main, options

    last = tmp_path / "cap_last_cap"
    last.write_text("37\n")
    monkeypatch.setattr(options, "_CAP_LAST_CAP", str(last))
    with pytest.raises(SystemExit) as stop:
        main(["run", "--drop-all-caps", "--keep-cap", "chown,38,bpf", "--", "true"])
    assert stop.value.code == 125
    assert capsys.readouterr().err == (
        f"hardexec: --keep-cap: capability 38, 39 does not exist on this kernel (its last is 37, "
        f"AUDIT_READ, per {last})\n"
    )


def _argparse_reading(args):
    from hardexec.cli.parser import parser

    ns, extras = parser()[0].parse_known_args(args)
    assert not extras
    return vars(ns)


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--no-new-privs", "--", "/bin/true"],
        ["run", "--no-new-privs", "/bin/true", "-x", "--", "y"],
        ["run", "--", "--no-new-privs"],
        ["run"],
        ["run", "--usage"],
        ["run", "--user", "nobody", "--group=nogroup", "--groups=", "id", "-u"],
        ["run", "--drop-all-caps", "--keep-cap", "a,b", "--keep-cap=c", "--keep-cap", "d", "x"],
        ["run", "--memory", "1M", "--memory", "2M", "--pids=3", "--cpus", "0.5", "--", "x"],
        ["run", "--cpu-max", "max/100000", "--cgroup", "--cgroup-parent", "/sys", "--", "x"],
        ["run", "--nofile", "1", "--fsize", "2", "--as", "3", "--cpu-seconds", "4", "x"],
        ["run", "--nproc", "5", "--stack", "6", "--no-core", "--strict", "--best-effort", "x"],
        ["run", "--keep-leftovers", "--cgroup", "--", "--", "x"],
    ],
)
def test_the_fast_reader_reads_like_argparse(args):
    from hardexec.cli.args import parse_run

    fast = parse_run(args[1:])
    assert fast is not None
    assert vars(fast) == _argparse_reading(args)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-h"],
        ["--no-new"],  # an abbreviation: argparse's to accept or refuse
        ["--bogus", "--", "x"],
        ["--user"],
        ["--fsize", "-1M", "x"],
        ["--usage=yes", "x"],
        ["-x", "y"],
    ],
)
def test_the_fast_reader_defers_the_rest_to_argparse(args):
    from hardexec.cli.args import parse_run

    assert parse_run(args) is None


def test_the_option_table_is_argparses():
    from hardexec.cli.args import FLAGS, REPEATED, VALUES
    from hardexec.cli.parser import parser

    run = parser()[1]["run"]
    actions = {a.option_strings[-1]: a for a in run._actions if a.option_strings}
    del actions["--help"]
    assert {name: a.dest for name, a in actions.items()} == {**VALUES, **FLAGS}
    assert {name for name, a in actions.items() if a.nargs == 0} == set(FLAGS)
    assert {a.dest for a in actions.values() if a.default == []} == REPEATED
