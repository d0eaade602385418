"""Rlimits: what the program sees, and that it cannot raise them."""

import signal

import pytest

import hardexec
from hardexec import Policy, RlimitConfig

PYTHON = "/usr/bin/python3"

# field, value, the /proc/self/limits line that shows it
LIMITS = [
    ("max_open_files", 64, "Max open files"),
    ("max_file_size_bytes", 1 << 20, "Max file size"),
    ("address_space", 2 << 30, "Max address space"),
    ("cpu_seconds", 100, "Max cpu time"),
    ("max_processes", 4000, "Max processes"),
    ("stack", 4 << 20, "Max stack size"),
]


def limits_of(policy: Policy) -> dict[str, list[str]]:
    result = hardexec.run(
        ["cat", "/proc/self/limits"], policy=policy, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines()[1:]:
        name = line[:26].strip()
        rows[name] = line[26:].split()
    return rows


@pytest.mark.parametrize(("field", "value", "row"), LIMITS, ids=[f for f, _, _ in LIMITS])
def test_each_limit_is_soft_equals_hard(stage, field, value, row):
    rows = limits_of(Policy(rlimits=RlimitConfig(**{field: value})))
    assert rows[row][:2] == [str(value), str(value)]


def test_no_core_and_shell_view(stage):
    policy = Policy(rlimits=RlimitConfig(disable_core_dumps=True, max_open_files=64))
    assert limits_of(policy)["Max core file size"][:2] == ["0", "0"]
    result = hardexec.run(
        ["sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -c"],
        policy=policy,
        capture_output=True,
        text=True,
    )
    assert result.stdout.split() == ["64", "64", "0"]


def test_a_limit_above_the_inherited_hard_limit_is_clamped_to_it(stage):
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    rows = limits_of(Policy(rlimits=RlimitConfig(max_open_files=hard * 4)))
    assert rows["Max open files"][:2] == [str(hard), str(hard)]


def test_the_program_cannot_raise_them(stage):
    code = (
        "import resource\n"
        "try:\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (65, 65))\n"
        "    print('raised')\n"
        "except (ValueError, OSError) as e:\n"
        "    print('refused')\n"
    )
    policy = Policy(rlimits=RlimitConfig(max_open_files=64))
    result = hardexec.run([PYTHON, "-I", "-c", code], policy=policy, capture_output=True, text=True)
    assert result.stdout == "refused\n"
    shell = hardexec.run(
        ["sh", "-c", "ulimit -n 65"], policy=policy, capture_output=True, text=True
    )
    assert shell.returncode != 0


def test_writing_beyond_fsize_fails(stage, tmp_path):
    policy = Policy(rlimits=RlimitConfig(max_file_size_bytes=1024))
    target = tmp_path / "big"
    killed = hardexec.run(["sh", "-c", f"exec head -c 4096 /dev/zero > {target}"], policy=policy)
    assert killed.returncode == -signal.SIGXFSZ  # default disposition, restored for the program
    assert target.stat().st_size == 1024
    code = (
        "import signal, errno\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"f = open({str(target)!r}, 'wb', buffering=0)\n"
        "f.write(b'x' * 1024)\n"
        "try:\n"
        "    f.write(b'x')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
    )
    result = hardexec.run([PYTHON, "-I", "-c", code], policy=policy, capture_output=True, text=True)
    assert result.stdout == "EFBIG\n"


def test_open_files_beyond_nofile_fail_with_emfile(stage):
    code = (
        "import errno\n"
        "files = []\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        files.append(open('/dev/null'))\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], len(files))\n"
    )
    policy = Policy(rlimits=RlimitConfig(max_open_files=16))
    result = hardexec.run([PYTHON, "-I", "-c", code], policy=policy, capture_output=True, text=True)
    errname, opened = result.stdout.split()
    assert errname == "EMFILE" and int(opened) < 16


def test_cpu_seconds_end_a_busy_loop(stage):
    policy = Policy(rlimits=RlimitConfig(cpu_seconds=1))
    result = hardexec.run(["sh", "-c", "while :; do :; done"], policy=policy, timeout=60)
    assert result.returncode == -signal.SIGKILL  # soft = hard: the kernel kills at the limit
    assert result.usage.cpu_user + result.usage.cpu_system >= 0.9
