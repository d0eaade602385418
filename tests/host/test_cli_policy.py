"""``hardexec run --policy FILE`` and ``--profile NAME``, run for real: what the program itself
receives is what the file and the profile say, and what the same options give."""

import os
import sys

import pytest

from hardexec import cgroups as cg
from helpers import parse_status, run_text

HARDEXEC = [sys.executable, "-m", "hardexec"]
CAP_LINES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
# What the program reports of itself: its sets, no_new_privs, seccomp, environment, core limit,
# network interfaces and open-files limit.
REPORT = (
    "grep -E '^(Cap|NoNewPrivs|Seccomp:|Uid|Gid)' /proc/self/status; echo env:; env | sort; "
    "echo core: $(ulimit -c); echo nofile: $(ulimit -n); "
    "echo links: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' ')"
)


def hx(*args, **kwargs):
    return run_text([*HARDEXEC, *args], **kwargs)


def report(*args):
    result = hx("run", *args, "--", "sh", "-c", REPORT, cwd="/")
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def host_links():
    with open("/proc/net/dev") as f:
        return sorted(line.split(":")[0].strip() for line in f.readlines()[2:])


def test_strict_gives_what_the_readme_says(stage):
    out, err = report("--profile", "strict")
    status = parse_status(out)
    assert {line: status[line] for line in CAP_LINES} == dict.fromkeys(CAP_LINES, "0" * 16)
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    env = out.split("env:\n", 1)[1].split("core:", 1)[0].split()
    assert env == ["PATH=/usr/local/bin:/usr/bin:/bin", "PWD=/"]  # PWD: the shell's own
    assert "core: 0\n" in out
    assert "links: lo\n" in out  # a network namespace with only a loopback
    assert err == ""


def test_strict_denies_the_default_list_and_says_so(stage):
    result = hx("run", "--profile", "strict", "--", "unshare", "-U", "true")
    assert result.returncode != 0
    assert "hardexec: denied syscalls: unshare (1)" in result.stderr


def test_service_keeps_net_bind_service_and_the_hosts_network(stage):
    out, _ = report("--profile", "service", "--user", "nobody")
    status = parse_status(out)
    assert {line: status[line] for line in CAP_LINES} == dict.fromkeys(CAP_LINES, f"{1 << 10:016x}")
    assert status["Uid"].split() == ["65534"] * 4
    assert f"links: {' '.join(host_links())}\n" in out
    # It can do what it kept: bind a privileged port (on loopback) as nobody.
    bind = hx(
        "run",
        "--profile",
        "service",
        "--user",
        "nobody",
        "--",
        "python3",
        "-c",
        "import socket; s = socket.socket(); s.bind(('127.0.0.1', 81)); print('bound')",
    )
    assert (bind.returncode, bind.stdout) == (0, "bound\n"), bind.stderr


def test_a_file_gives_the_program_what_the_same_options_give(stage, tmp_path):
    options = [
        *("--drop-all-caps", "--keep-cap", "NET_RAW", "--no-new-privs", "--user", "nobody"),
        *("--nofile", "77", "--no-core", "--env-clear", "--env", "A=1", "--net", "none"),
    ]
    path = tmp_path / "p.toml"
    path.write_text(
        "version = 1\n"
        "[security]\ndrop_all_caps = true\nkeep_caps = ['NET_RAW']\nno_new_privs = true\n"
        "user = 'nobody'\n"
        "[rlimits]\nmax_open_files = 77\ndisable_core_dumps = true\n"
        "[confinement]\nnamespaces = ['net']\n"
        "[run]\nenv_policy = 'clear'\nenv = { A = '1' }\n"
    )
    by_options = report(*options)
    by_file = report("--policy", str(path))
    assert by_file == by_options
    assert "nofile: 77\n" in by_file[0] and "A=1\n" in by_file[0]
    assert parse_status(by_file[0])["CapEff"] == f"{1 << 13:016x}"


def test_options_win_over_the_file(stage, tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"version": 1, "rlimits": {"max_open_files": 77}, "run": {"env": {"A": "1"}}}')
    out, _ = report("--policy", str(path), "--nofile", "33", "--env", "A=2")
    assert "nofile: 33\n" in out and "A=2\n" in out


def test_a_bad_file_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "p.toml"
    path.write_text("version = 1\n[rlimits]\nmax_open_file = 10\n")
    result = hx("run", "--policy", str(path), "--", "touch", str(marker))
    assert result.returncode == 125
    assert result.stderr == (
        f"hardexec: {path}: rlimits.max_open_file: unknown key (known here: max_open_files, "
        "max_file_size_bytes, disable_core_dumps, address_space, cpu_seconds, max_processes, "
        "stack)\n"
    )
    assert not marker.exists()


def test_cgroup_parent_round_trips_through_a_file(tmp_path):
    """The one key the unit tier cannot give: it needs a real group."""
    from hardexec.cli.args import parse_run
    from hardexec.cli.options import request
    from hardexec.policyfile import dumps

    parent = cg.v2_mount() / f"hxtest-policy-{os.getpid()}"
    parent.mkdir()
    try:
        direct = request(parse_run(["--cgroup", "--cgroup-parent", str(parent), "--", "true"]))
        path = tmp_path / "p.toml"
        path.write_text(dumps(direct.policy_file()))
        assert f'cgroup_parent = "{parent}"' in path.read_text()
        through = request(parse_run(["--policy", str(path), "--", "true"]))
        assert through.policy == direct.policy
        # And it runs there: the program's own group is under the parent.
        result = hx("run", "--policy", str(path), "--", "cat", "/proc/self/cgroup")
        assert result.returncode == 0, result.stderr
        [line] = [x for x in result.stdout.splitlines() if x.startswith("0::")]
        assert line.startswith(f"0::/{parent.relative_to(cg.v2_mount())}/")
    finally:
        parent.rmdir()


@pytest.mark.parametrize("profile", ["strict", "service", "none"])
def test_every_profile_runs_a_program(stage, profile):
    result = hx("run", "--profile", profile, "--", "echo", "hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello\n", "")
