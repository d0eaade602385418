"""Fixtures and hooks for every tier: exec-stage selection, leak checks, the VM tier on request."""

from __future__ import annotations

import os

import pytest

from hardexec import cgroups
from hardexec.stage import native_available
from helpers import (
    IS_LINUX,
    children,
    hardexec_groups,
    hardexec_temp_files,
    open_fds,
    wait_until,
)

STAGES = ("native", "python")


def pytest_collection_modifyitems(config, items):
    """Skip the VM tier when HARDEXEC_SKIP_VM_TIER says why (./run-tests: other Pythons)."""
    why = os.environ.get("HARDEXEC_SKIP_VM_TIER")
    if not why:
        return
    for item in items:
        if "/tests/vm/" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(params=STAGES)
def stage(request, monkeypatch):
    """Run the test once against each exec stage (HARDEXEC_STAGE), failing if native is missing."""
    if request.param == "native" and not native_available():
        pytest.fail("the native exec stage was not built; the install must compile stage.c")
    monkeypatch.setenv("HARDEXEC_STAGE", request.param)
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _janitor_started():
    """Start the cgroup janitor (and the seccomp hub) up front, so their own wake-up pipes are
    not counted as leaks."""
    if IS_LINUX:
        cgroups._janitor()
        from hardexec.confine import notify

        notify.start_hub()  # and the seccomp listeners' thread, with its wake-up pipe


@pytest.fixture(scope="session", autouse=True)
def groups_at_start() -> set[str]:
    """The hardexec groups on this machine before the session began (left by earlier runs)."""
    return hardexec_groups() if IS_LINUX else set()


@pytest.fixture
def no_leaks():
    """Assert that the test leaves nothing behind: fd, child, cgroup, temp file.

    Checked: no new open fd (memfds included), no child (running or zombie), no hardexec-made
    cgroup, no hardexec-* file or folder in the temp dir or /dev/shm.

    A group whose processes outlive its program is removed by the janitor once they exit,
    and a seccomp listener is closed by its hub once its filter's last process is reaped, so
    the check waits a little for both first.
    """
    groups_before = hardexec_groups()
    temp_before = hardexec_temp_files()
    before = open_fds()
    yield
    leaked_children = children()
    wait_until(lambda: not cgroups.pending_removal(), timeout=5)
    if IS_LINUX:
        from hardexec.confine import notify

        # The seccomp hub closes a listener once its filter's last process is reaped.
        wait_until(lambda: not notify.pending(), timeout=5)
    leaked_groups = hardexec_groups() - groups_before  # not those of other test runs
    leaked_fds = open_fds() - before
    leaked_temp = hardexec_temp_files() - temp_before
    assert not leaked_children, f"children left behind: {leaked_children}"
    assert not leaked_groups, f"cgroups left behind: {sorted(leaked_groups)}"
    assert not leaked_fds, f"fds left open: {sorted(leaked_fds)}"
    assert not leaked_temp, f"temp files left behind: {sorted(leaked_temp)}"
