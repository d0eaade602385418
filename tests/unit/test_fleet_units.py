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
