"""The fleet's pure parts: when a ceiling leaves tasks as uid 0."""

from __future__ import annotations

import os

import pytest

from hardexec.celery.task import tasks_run_as_root
from hardexec.policyfile import loads, profile

ROOT = os.geteuid() == 0


@pytest.mark.parametrize(
    ("ceiling", "may_leave"),
    [
        (profile("strict"), ROOT),  # no user: tasks would be uid 0, as the worker
        (profile("none"), ROOT),
        (loads('version = 1\n[security]\nuser = "nobody"\n'), False),
        (loads('version = 1\n[security]\nuser = "root"\n'), ROOT),
    ],
    ids=["strict", "none", "nobody", "root"],
)
def test_a_root_worker_knows_when_its_tasks_would_run_as_root(ceiling, may_leave):
    assert tasks_run_as_root(ceiling) is may_leave


@pytest.fixture
def open_dir():
    """A directory in /tmp everyone may enter (pytest's tmp_path is under root's 0700 one)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="fleet-cwd-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_tasks_user_must_be_able_to_enter_its_directory(open_dir):
    from hardexec import Policy, SecurityConfig
    from hardexec.celery.task import _check_cwd
    from hardexec.errors import PolicyError

    nobody = Policy(security=SecurityConfig(user="nobody"))
    closed = open_dir / "closed"
    (closed / "inside").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(PolicyError, match=r"the task's user \(uid 65534\) may not enter .*closed$"):
        _check_cwd(str(closed / "inside"), nobody)
    closed.chmod(0o711)  # search, no listing: enough to enter
    _check_cwd(str(closed / "inside"), nobody)
    with pytest.raises(PolicyError, match="No such file or directory"):
        _check_cwd(str(open_dir / "missing"), nobody)
    _check_cwd(str(closed), Policy())  # the worker's own identity: nothing to check


def test_a_tasks_name_is_bounded():
    from hardexec.errors import PolicyError
    from hardexec.runner import TaskSpec

    assert TaskSpec.command(["true"], name="n" * 256).name == "n" * 256
    with pytest.raises(PolicyError, match=r"task.name: 257 characters \(at most 256"):
        TaskSpec.command(["true"], name="n" * 257)


def test_a_cpu_period_of_none_is_a_policy_error():
    from hardexec import CpuMax
    from hardexec.errors import PolicyError

    with pytest.raises(PolicyError, match="cgroups.cpu.period: None"):
        CpuMax(quota=50_000, period=None)
