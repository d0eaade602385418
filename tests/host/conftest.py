"""Host tier: real spawns as root on this machine. Every test here checks for leaks."""

import pytest

from helpers import IS_LINUX, IS_ROOT


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/host/" not in str(item.path):
            continue
        item.add_marker(pytest.mark.host)
        if not (IS_ROOT and IS_LINUX):
            item.add_marker(
                pytest.mark.skip(reason="host tier needs root on Linux to change capabilities")
            )


@pytest.fixture(autouse=True)
def _leak_check(no_leaks):
    """Every host test must leave no fd and no child behind."""
    return no_leaks
