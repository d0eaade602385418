"""``--policy`` and ``--profile`` on the command line: every option round-trips through a policy
file (options → file → ``--policy`` of it asks for the same), options win over the file, the
file over the profile, and every option is listed in ``--help`` with its meaning."""

import pytest

from hardexec.cli.args import FLAGS, OPTIONS, VALUES, parse_run
from hardexec.cli.options import request
from hardexec.policyfile import dumps

# One command line per option that a policy file can hold (what it needs with it too).
EVERY_OPTION = {
    "--drop-all-caps": ["--drop-all-caps"],
    "--keep-cap": ["--drop-all-caps", "--keep-cap", "NET_RAW,net_admin"],
    "--no-new-privs": ["--no-new-privs"],
    "--strict": ["--strict"],
    "--user": ["--user", "nobody"],
    "--group": ["--group", "nogroup"],
    "--groups": ["--user", "nobody", "--groups", ""],
    "--nofile": ["--nofile", "10"],
    "--fsize": ["--fsize", "1M"],
    "--no-core": ["--no-core"],
    "--as": ["--as", "1G"],
    "--cpu-seconds": ["--cpu-seconds", "5"],
    "--nproc": ["--nproc", "50"],
    "--stack": ["--stack", "8M"],
    "--memory": ["--memory", "64M"],
    "--pids": ["--pids", "10"],
    "--cpus": ["--cpus", "0.5"],
    "--cpu-max": ["--cpu-max", "20000/50000"],
    "--cgroup": ["--cgroup"],
    "--best-effort": ["--cgroup", "--net", "none", "--best-effort"],
    "--timeout": ["--timeout", "1.5m"],
    "--kill-after": ["--timeout", "30s", "--kill-after", "2s"],
    "--env-clear": ["--env-clear"],
    "--env-keep": ["--env-keep", "HOME", "--env-keep", "LANG"],
    "--env": ["--env", "A=1", "--env", "B=x=y"],
    "--max-output": ["--max-output", "1M"],
    "--fs-ro": ["--fs-ro", "/usr"],
    "--fs-rx": ["--fs-rx", "/bin"],
    "--fs-rw": ["--fs-rw", "/tmp"],
    "--fs-rwx": ["--fs-rwx", "/var/tmp"],
    "--no-fs-deps": ["--fs-ro", "/usr", "--no-fs-deps"],
    "--tcp-bind": ["--tcp-bind", "8080,8081"],
    "--tcp-connect": ["--tcp-connect", "443"],
    "--syscalls": ["--syscalls", "default"],
    "--syscalls-allow": ["--syscalls-allow", "@default,socket"],
    "--syscalls-deny": ["--syscalls-deny", "ptrace:EACCES,@mount"],
    "--net": ["--net", "none"],
    "--hostname": ["--hostname", "box"],
    "--umask": ["--umask", "027"],
    "--pid-ns": ["--pid-ns"],
    "--ipc-ns": ["--ipc-ns"],
    "--uts-ns": ["--uts-ns"],
}
# Options about this one invocation, not the policy: no policy file key holds them.
INVOCATION_ONLY = {
    "--policy",
    "--profile",
    "--usage",
    "--keep-leftovers",
    "--json-result",
    "--cwd",
    "--verify",  # how this run is checked, not what it may hold
    "--cgroup-parent",  # a key too, but it needs a delegated group: tests/host/test_cli_policy.py
}


def req(*args):
    ns = parse_run([*args, "--", "/bin/true"])
    assert ns is not None, args
    return request(ns)


def test_the_table_covers_every_option():
    assert set(EVERY_OPTION) | INVOCATION_ONLY == set(OPTIONS)


@pytest.mark.parametrize("option", list(EVERY_OPTION))
@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_every_option_round_trips_through_a_policy_file(option, fmt, tmp_path):
    direct = req(*EVERY_OPTION[option])
    path = tmp_path / f"p.{fmt}"
    path.write_text(dumps(direct.policy_file(), fmt))
    through = req("--policy", str(path))
    assert through.policy == direct.policy
    assert through.policy_file() == direct.policy_file()
    assert (through.env, through.max_output, through.supervise) == (
        direct.env,
        direct.max_output,
        direct.supervise,
    )
    assert through.policy != req().policy or option in ("--env-clear", "--env", "--env-keep")


def test_options_win_over_the_file_and_the_file_over_the_profile(tmp_path):
    path = tmp_path / "web.toml"
    path.write_text(
        "version = 1\n"
        "[security]\ndrop_all_caps = true\nkeep_caps = ['NET_BIND_SERVICE']\n"
        "[rlimits]\nmax_open_files = 64\n"
        "[confinement]\nnamespaces = ['ipc']\n"
        "[run]\nenv = { A = '1', B = '2' }\ntimeout = 60.0\n"
    )
    r = req("--profile", "strict", "--policy", str(path), "--nofile", "32", "--keep-cap", "NET_RAW")
    security = r.policy.security
    assert (security.drop_all_caps, security.no_new_privs) == (True, True)  # profile, file
    assert security.keep_caps.names() == ["NET_RAW"]  # the option replaced the file's list
    assert r.policy.rlimits.max_open_files == 32
    assert r.policy.rlimits.disable_core_dumps  # the profile's, untouched
    assert r.policy.confinement.namespaces == ("ipc",)  # the file's list replaced the profile's
    assert r.policy.confinement.syscalls is not None  # the profile's filter stays
    assert r.task.timeout == 60.0
    assert r.task.env_policy == "clear"  # the profile's
    r = req("--policy", str(path), "--env", "B=3", "--timeout", "5s", "--pid-ns", "--net", "none")
    assert dict(r.task.env) == {"A": "1", "B": "3"}  # tables merge name by name
    assert r.task.timeout == 5.0
    # A namespace option adds its namespace: it never takes away the file's.
    assert set(r.policy.confinement.namespaces) == {"ipc", "pid", "net"}


def test_a_profile_is_a_starting_point_options_narrow_or_widen():
    assert set(req("--profile", "strict", "--pid-ns").policy.confinement.namespaces) == {
        "net",
        "pid",
    }
    service = req("--profile", "service")
    assert service.policy.security.keep_caps.names() == ["NET_BIND_SERVICE"]
    assert service.policy.confinement.namespaces == ()
    assert req("--profile", "none").policy == req().policy
    assert req("--profile", "strict").supervise  # its syscall filter's denials are counted


def test_a_files_cgroup_is_enforced_unless_best_effort_is_chosen(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text("version = 1\n[cgroups]\npids = 10\n")
    assert req("--policy", str(path)).policy.cgroups.fail_on_error is True
    assert req("--policy", str(path), "--best-effort").policy.cgroups.fail_on_error is False
    path.write_text("version = 1\n[cgroups]\npids = 10\nfail_on_error = false\n")
    assert req("--policy", str(path)).policy.cgroups.fail_on_error is False  # the file chose
    r = req("--policy", str(path))
    assert r.supervise and r.policy.die_with_parent
    assert r.ceilings == (f"the cgroup of --policy {path}",)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            "version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = ['NET_BIND']\n",
            [],
            "hardexec: {path}: security.keep_caps[0]: unknown capability 'NET_BIND'; did you "
            "mean NET_ADMIN, NET_BIND_SERVICE?\n",
        ),
        ("version = 1\nuser = 'x'\n", [], "hardexec: {path}: user: unknown key (known here: "),
        (None, [], "hardexec: {path}: cannot read it: No such file or directory\n"),
        ("version = 1\n", ["--profile", "lax"], "hardexec: --profile: 'lax' is not a profile"),
        ("version = 1\n", ["--keep-cap", "CHOWN"], "hardexec: --keep-cap CHOWN: needs --drop-all"),
        ("version = 1\n", ["--kill-after", "1s"], "hardexec: --kill-after: needs --timeout"),
        ("version = 1\n", ["--timeout", "0"], "hardexec: --timeout: 0.0 is not a positive"),
        ("version = 1\n", ["--no-fs-deps"], "hardexec: --no-fs-deps: no --fs-* rule is given"),
        ("version = 1\n", ["--best-effort"], "hardexec: --best-effort: no cgroup"),
        (
            "version = 1\n[run]\ntimeout = 10.0\n[cgroups]\npids = 5\n",
            ["--keep-leftovers"],
            "hardexec: --keep-leftovers cannot be combined with --timeout",
        ),
        (
            "version = 1\n[confinement]\nhostname = 'box'\n",
            [],
            "hardexec: {path}: confinement.hostname: ",
        ),
    ],
)
def test_mistakes_exit_125_naming_the_file_or_the_option(content, args, message, tmp_path, capsys):
    path = tmp_path / "web.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        req("--policy", str(path), *args)
    assert stop.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith(message.format(path=path)) and err.count("\n") == 1, err


def test_a_file_that_enables_keep_caps_lets_the_option_narrow_them(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("version = 1\n[security]\ndrop_all_caps = true\n")
    assert req("--policy", str(path), "--keep-cap", "CHOWN").policy.security.keep_caps.names() == [
        "CHOWN"
    ]


@pytest.mark.parametrize("command", ["run", "explain", "learn", "check", "caps"])
def test_help_lists_every_option_with_a_one_line_meaning(command, capsys):
    from hardexec.cli.parser import parser

    run = parser()[1][command]
    for action in run._actions:
        if not action.option_strings:
            continue
        assert action.help and "\n" not in action.help, action.option_strings
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    options = [o for a in run._actions for o in a.option_strings]
    if command in ("run", "explain", "learn"):  # every run option, in each
        assert set(VALUES) | set(FLAGS) <= set(options)
        assert "policy files: a profile, then a file, then the options" in text
    for option in options:
        assert f"{option} " in text or f"{option}," in text or text.endswith(option), option


def test_an_options_ceiling_and_confinement_stay_enforced_over_a_lenient_file(tmp_path):
    path = tmp_path / "lenient.toml"
    path.write_text(
        "version = 1\n[cgroups]\npids = 10\nfail_on_error = false\n"
        "[confinement]\nnamespaces = ['ipc']\nbest_effort = true\n"
    )
    alone = req("--policy", str(path))
    assert not alone.policy.cgroups.fail_on_error and alone.policy.confinement.best_effort
    typed = req("--policy", str(path), "--memory", "64M", "--fs-ro", "/usr")
    assert typed.policy.cgroups.fail_on_error  # the option's --memory is not made best effort
    assert not typed.policy.confinement.best_effort
    lenient = req("--policy", str(path), "--memory", "64M", "--fs-ro", "/usr", "--best-effort")
    assert not lenient.policy.cgroups.fail_on_error and lenient.policy.confinement.best_effort


def test_syscall_options_add_to_the_files_filter_never_take_away(tmp_path):
    r = req("--profile", "strict", "--syscalls-deny", "mount:EACCES")
    syscalls = r.policy.confinement.syscalls
    assert syscalls.default and syscalls.deny == ("mount:EACCES",)  # strict's list stays
    path = tmp_path / "allow.toml"
    path.write_text("version = 1\n[confinement.syscalls]\nallow = ['@default', 'socket']\n")
    r = req("--policy", str(path), "--syscalls-deny", "ptrace")
    assert r.policy.confinement.syscalls.allow == ("@default", "socket")  # still an allow-list
    assert r.policy.confinement.syscalls.deny == ("ptrace",)
    r = req("--policy", str(path), "--syscalls-allow", "@default")
    assert r.policy.confinement.syscalls.allow == ("@default",)  # the option gives the list


def test_kill_after_best_effort_and_no_fs_deps_over_a_file(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("version = 1\n[confinement]\nfs = [{ path = '/usr', access = 'ro' }]\n")
    r = req("--policy", str(path), "--timeout", "10s", "--kill-after", "3s")
    assert (r.task.timeout, r.task.kill_after) == (10.0, 3.0)
    assert r.policy_file().run.kill_after == 3.0
    assert req("--policy", str(path), "--no-fs-deps").policy.confinement.fs_dependencies is False
    assert req("--policy", str(path), "--best-effort").policy.confinement.best_effort is True
    assert req("--policy", str(path)).policy.confinement.fs_dependencies is True


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("version = 1\n", ["--policy", "{path}"], "hardexec: --policy: given 2 times ("),
        (
            "version = 1\n",
            ["--profile", "strict", "--profile", "none"],
            "hardexec: --profile: given 2 ",
        ),
        (
            "version = 1\ncgroup_parent = '/sys/fs/cgroup/unified'\n",
            [],
            "hardexec: --policy {path}: cgroup_parent: no cgroup is asked for",
        ),
        (
            "version = 1\n[cgroups]\nkeep_at_exit = true\n",
            [],
            "hardexec: --policy {path}: cgroups.keep_at_exit: the command removes its group",
        ),
        (
            "version = 1\n[security]\ndrop_all_caps = true\nkeep_caps = [63]\n",
            [],
            "hardexec: --policy {path}: security.keep_caps: capability 63 does not exist",
        ),
    ],
)
def test_more_mistakes_name_where_they_are(content, args, message, tmp_path, capsys):
    if "cgroup_parent" in content:  # a real cgroup v2 group, wherever this machine mounts it
        from hardexec import cgroups

        content = content.replace("/sys/fs/cgroup/unified", str(cgroups.v2_mount()))
    path = tmp_path / "p.toml"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        req("--policy", str(path), *(a.format(path=path) for a in args))
    assert stop.value.code == 125
    err = capsys.readouterr().err
    assert err.startswith(message.format(path=path)) and err.count("\n") == 1, err


def test_a_json_null_confinement_is_no_confinement(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"version": 1, "confinement": null}')
    assert req("--policy", str(path), "--net", "none").policy.confinement.namespaces == ("net",)


def test_a_missing_rule_path_names_the_file_or_the_option(tmp_path, capsys):
    from hardexec.cli import main

    path = tmp_path / "p.toml"
    path.write_text(
        "version = 1\n[confinement]\nfs = [{ path = '/nonexistent-x', access = 'rw' }]\n"
    )
    for args, message in (
        ([], f"hardexec: --policy {path}: confinement.fs[0].path: '/nonexistent-x': No such"),
        (["--fs-ro", "/nonexistent-y"], "hardexec: --fs-ro: '/nonexistent-y': No such file"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["run", "--policy", str(path), *args, "--", "/nonexistent/never-run"])
        assert stop.value.code == 125
        assert capsys.readouterr().err.startswith(message)
