"""``hardexec caps current [--pid N] [--json]``: what a running process holds, decoded.

The five capability sets, ``NoNewPrivs`` and the seccomp mode, from ``/proc/PID/status`` —
the same ground truth the tests read, for an operator checking a program hardexec started (or
any other).
"""

from __future__ import annotations

import os
import sys

from .options import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .args import Namespace

__all__ = ["current", "read_status"]

SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
_SECCOMP = {"0": "off", "1": "strict", "2": "filter"}


def read_status(pid: int | None) -> dict[str, str]:
    """``/proc/PID/status`` (this process's when ``pid`` is None) as name → value."""
    path = "/proc/self/status" if pid is None else f"/proc/{pid}/status"
    with open(path) as f:
        return dict(line.rstrip("\n").partition(":\t")[::2] for line in f if ":\t" in line)


def current(ns: Namespace) -> int:
    """Print a process's capability sets, NoNewPrivs and seccomp mode (or exit 125 saying
    why it cannot)."""
    from ..caps import CapSet

    if ns.what != "current":
        fail("caps: --pid and --json go with 'current' (hardexec caps current --pid N)")
    if ns.decode is not None:
        fail("caps current: --decode is for a mask alone (hardexec caps --decode HEX)")
    pid = None
    if ns.pid is not None:
        if not (ns.pid.isascii() and ns.pid.isdigit()) or int(ns.pid) == 0:
            fail(f"caps current --pid: {ns.pid!r} is not a process id")
        pid = int(ns.pid)
    try:
        status = read_status(pid)
    except FileNotFoundError:
        fail(f"caps current --pid: {ns.pid}: no such process")
    except OSError as err:
        fail(f"caps current --pid: {ns.pid}: {err.strerror}")
    sets = {name: status.get(name, "").strip() for name in SETS}
    decoded = {
        name: [cap.name for cap in CapSet.from_hex(value)] if value else []
        for name, value in sets.items()
    }
    nnp = status.get("NoNewPrivs", "").strip()
    seccomp = _SECCOMP.get(status.get("Seccomp", "").strip(), status.get("Seccomp", "").strip())
    who = pid if pid is not None else os.getpid()
    if ns.json:
        import json

        document = {
            "version": 1,
            "pid": who,
            "name": status.get("Name", "").strip(),
            "sets": {name: {"hex": sets[name], "caps": decoded[name]} for name in SETS},
            "no_new_privs": nnp == "1",
            "seccomp": seccomp,
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    print(f"pid {who} ({status.get('Name', '').strip()})")
    for name in SETS:
        print(f"{name}  {sets[name]}  {','.join(decoded[name]) or '(none)'}")
    print(f"NoNewPrivs  {nnp}")
    print(f"Seccomp     {seccomp}")
    return 0
