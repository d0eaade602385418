"""VM tier: cgroup v2 limits need controllers this host's v2 lacks (they are on v1 here).

On the host, the first test of this directory boots one VM (virtme-ng, the Debian kernel, the
host's filesystem read-only) and runs the whole directory inside it, as root, with
HARDEXEC_IN_VM=1; then every test here reports the outcome it had inside the VM. Inside the VM,
the tests run for real, with the same leak checks as the host tier.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

import vm

IN_VM = os.environ.get("HARDEXEC_IN_VM") == "1"
ROOT = Path(__file__).resolve().parents[2]
VM_TIMEOUT = 1500  # seconds for boot and the whole directory, under software emulation
BEGIN, END = "===HARDEXEC-JUNIT-BEGIN===", "===HARDEXEC-JUNIT-END==="


@dataclass(frozen=True)
class Outcome:
    state: str  # passed, failed, skipped
    message: str = ""


def _boot_and_run(nodeids: list[str]) -> tuple[dict[tuple[str, str], Outcome], str]:
    inner = " ".join(
        [
            f"cd {shlex.quote(str(ROOT))} &&",
            "HARDEXEC_IN_VM=1 PYTHONDONTWRITEBYTECODE=1",
            shlex.quote(sys.executable),
            "-m pytest -p no:cacheprovider -q -rfEs --junitxml=/tmp/hardexec-vm.xml",
            *map(shlex.quote, nodeids),
            f"; echo {BEGIN}; cat /tmp/hardexec-vm.xml; echo; echo {END}",
        ]
    )
    command, env = vm.command(inner)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=VM_TIMEOUT, env=env, check=False
        )
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        output = (
            f"the VM did not finish within {VM_TIMEOUT} s\n{err.stdout or ''}{err.stderr or ''}"
        )
    if BEGIN not in output or END not in output:
        return {}, output
    xml = output.split(BEGIN, 1)[1].split(END, 1)[0]
    results = {}
    for case in ET.fromstring(xml.strip()).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        state, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                state = "skipped" if tag == "skipped" else "failed"
                message = (found.get("message") or "") + "\n" + (found.text or "")
        if state == "failed" or (module, case.get("name")) not in results:
            results[(module, case.get("name", ""))] = Outcome(state, message.strip())
    return results, output


_results: dict[tuple[str, str], Outcome] | None = None
_output = ""


def _outcome(item: pytest.Function) -> Outcome:
    global _results, _output
    if _results is None:
        vm_items = [i for i in item.session.items if Path(i.path).parent == Path(__file__).parent]
        nodeids = sorted({str(Path(i.path).relative_to(ROOT)) for i in vm_items})
        _results, _output = _boot_and_run(nodeids)
    found = _results.get((Path(item.path).stem, item.name))
    if found is None:
        tail = "\n".join(_output.splitlines()[-60:])
        return Outcome(
            "failed", f"no result from the VM for {item.name}; its output ended:\n{tail}"
        )
    return found


def pytest_collection_modifyitems(config, items):
    if IN_VM:
        return
    why = vm.why_not()
    if why:
        for item in items:
            if Path(item.path).parent == Path(__file__).parent:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """On the host, report the outcome the test had in the VM instead of running it here."""
    if IN_VM or Path(pyfuncitem.path).parent != Path(__file__).parent:
        return None
    outcome = _outcome(pyfuncitem)
    if outcome.state == "skipped":
        pytest.skip(f"in the VM: {outcome.message}")
    if outcome.state == "failed":
        pytest.fail(f"in the VM:\n{outcome.message}", pytrace=False)
    return True


@pytest.fixture(autouse=True)
def _leak_check(request):
    """Inside the VM, every test must leave no fd, child or cgroup behind."""
    if IN_VM:
        request.getfixturevalue("no_leaks")


@pytest.fixture
def in_vm_only():
    """For fixtures that touch cgroups: do nothing on the host, where the test body won't run."""
    return IN_VM
