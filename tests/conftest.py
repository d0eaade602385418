"""Fixtures for every tier: exec-stage selection and leak checks."""

from __future__ import annotations

import pytest

from hardexec.stage import native_available
from helpers import children, open_fds

STAGES = ("native", "python")


@pytest.fixture(params=STAGES)
def stage(request, monkeypatch):
    """Run the test once against each exec stage (HARDEXEC_STAGE), failing if native is missing."""
    if request.param == "native" and not native_available():
        pytest.fail("the native exec stage was not built; the install must compile stage.c")
    monkeypatch.setenv("HARDEXEC_STAGE", request.param)
    return request.param


@pytest.fixture
def no_leaks():
    """Assert that the test leaves no fd open and no child (running or zombie) behind."""
    before = open_fds()
    yield
    leaked_children = children()
    leaked_fds = open_fds() - before
    assert not leaked_children, f"children left behind: {leaked_children}"
    assert not leaked_fds, f"fds left open: {sorted(leaked_fds)}"
