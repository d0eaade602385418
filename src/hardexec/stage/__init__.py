"""Which exec stage runs: the native one built at install, or the pure-Python twin.

``HARDEXEC_STAGE`` selects it: ``native`` (required; an error if it was not built), ``python``
(the twin), or unset / ``auto`` (native when built, else the twin). Both take the same options
and behave identically, so the host test tier runs against each.
"""

from __future__ import annotations

import os
import sys

from ..errors import HardexecError

__all__ = ["NATIVE_STAGE", "TWIN_STAGE", "native_available", "stage_command"]

# os.path, not pathlib: this runs at every `hardexec run`, and pathlib's import is not free.
_HERE = os.path.dirname(os.path.realpath(__file__))
NATIVE_STAGE = os.path.join(_HERE, "hardexec-stage")
TWIN_STAGE = os.path.join(_HERE, "twin.py")
_VARIABLE = "HARDEXEC_STAGE"


def native_available() -> bool:
    """True when the native stage was built and is executable."""
    return os.access(NATIVE_STAGE, os.X_OK)


def stage_command() -> tuple[str, ...]:
    """The argv prefix that starts the selected stage (its options follow)."""
    return _command(os.environ.get(_VARIABLE, "auto"))


_commands: dict[str, tuple[str, ...]] = {}


def _command(mode: str) -> tuple[str, ...]:
    if mode not in _commands:
        _commands[mode] = _choose(mode)
    return _commands[mode]


def _choose(mode: str) -> tuple[str, ...]:
    if mode not in ("auto", "native", "python", ""):
        raise HardexecError(f"{_VARIABLE}={mode!r}: expected 'native', 'python' or 'auto'")
    if mode != "python" and native_available():
        return (str(NATIVE_STAGE),)
    if mode == "native":
        raise HardexecError(
            f"{_VARIABLE}=native, but the native exec stage was not built ({NATIVE_STAGE} "
            "is missing); reinstall hardexec where a C compiler is available"
        )
    if not sys.executable:
        raise HardexecError("the Python exec stage needs sys.executable, which is empty here")
    # -I: the program's environment (PYTHONPATH, …) must not steer the stage; -S: start faster.
    return (sys.executable, "-I", "-S", str(TWIN_STAGE))
