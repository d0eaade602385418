"""The fleet's pure parts: when a worker warns that tasks may leave their group."""

from __future__ import annotations

import os

import pytest

from hardexec.celery.task import _tasks_may_leave_their_group
from hardexec.policyfile import loads, profile

ROOT = os.geteuid() == 0


@pytest.mark.parametrize(
    ("ceiling", "may_leave"),
    [
        (profile("strict"), ROOT),  # root, no pid namespace: it can write any cgroup.procs
        (profile("none"), ROOT),
        (loads('version = 1\n[security]\nuser = "nobody"\n'), False),
        (loads('version = 1\n[confinement]\nnamespaces = ["pid"]\n'), False),
    ],
    ids=["strict", "none", "nobody", "pid-ns"],
)
def test_a_worker_warns_when_its_tasks_may_leave_their_group(ceiling, may_leave):
    assert _tasks_may_leave_their_group(ceiling) is may_leave
