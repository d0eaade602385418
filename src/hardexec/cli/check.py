"""``hardexec check [--json] [--need FEATURE,...]``: what this host can enforce, and why not.

Every answer comes from asking the kernel, not from version numbers: the Landlock ABI it
reports, the seccomp actions it lists, a namespace of each kind actually made by the exec stage
(through a user namespace where the launcher lacks CAP_SYS_ADMIN, as ``run`` would), a cgroup
actually made where ``run`` would make one. ``--json`` prints one document with a stable
schema (``version`` 1); ``--need`` exits 1 unless each named feature is usable.
"""

from __future__ import annotations

import os
import platform
import sys

from .current import SETS, read_status
from .options import fail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FEATURES", "check", "gather"]

NAMESPACES = ("user", "net", "pid", "ipc", "uts")
CONTROLLERS = ("memory", "pids", "cpu")
#: What ``--need`` may name.
FEATURES = ("landlock", "landlock-tcp", "seccomp", "seccomp-notify", "cgroup", "cgroup-kill")
FEATURES += tuple(f"cgroup-{name}" for name in CONTROLLERS)
FEATURES += tuple(f"ns-{name}" for name in NAMESPACES)
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_IS_SET = 47, 1


def _ambient() -> bool:
    """Whether the kernel has ambient capabilities (Linux 4.3): PR_CAP_AMBIENT answers."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_IS_SET, 0, 0, 0) >= 0


def _landlock() -> dict[str, Any]:
    from ..confine.landlock import abi

    version = abi()
    return {
        "usable": version > 0,
        "abi": version,
        "filesystem": version >= 1,
        "truncate": version >= 3,
        "tcp": version >= 4,
        "ioctl_dev": version >= 5,
        "scopes": version >= 6,
        "why": None if version > 0 else "the kernel has no Landlock, or it is not enabled",
    }


def _seccomp() -> dict[str, Any]:
    from ..confine.compile import seccomp_actions

    actions = sorted(seccomp_actions())
    return {
        "usable": bool(actions),
        "actions": actions,
        "user_notif": "user_notif" in actions,
        "why": None if actions else "no /proc/sys/kernel/seccomp/actions_avail",
    }


def _namespace(name: str) -> dict[str, Any]:
    """A namespace of this kind made for ``true`` by the exec stage, as ``run`` would."""
    from .. import run
    from ..confine import Confinement
    from ..errors import HardexecError
    from ..policy import Policy

    if name == "user":  # made with any other kind when the launcher lacks CAP_SYS_ADMIN
        from ..confine.compile import namespace_refused

        why = namespace_refused("user")
        return {"usable": why is None, "why": why}
    try:
        done = run(["true"], policy=Policy(confinement=Confinement(namespaces=[name])))
    except (HardexecError, OSError) as err:
        return {"usable": False, "why": str(err)}
    if done.returncode != 0:
        return {"usable": False, "why": f"true exited with status {done.returncode}"}
    return {"usable": True, "why": None}


def _cgroup() -> dict[str, Any]:
    from .. import cgroups
    from ..errors import CgroupError
    from ..policy import CgroupLimits

    found: dict[str, Any] = {"usable": False, "mount": None, "parent": None, "kill": False}
    found["controllers"] = {}
    try:
        found["mount"] = str(cgroups.v2_mount())
        parent = cgroups.default_parent()
        found["parent"] = str(parent)
        group = cgroups.Cgroup.create(CgroupLimits(fail_on_error=True))
    except (CgroupError, OSError) as err:
        found["why"] = err.strerror or str(err)
        for name in CONTROLLERS:
            found["controllers"][name] = {"usable": False, "why": found["why"]}
        return found
    try:
        found["usable"] = True
        found["kill"] = os.path.exists(os.path.join(str(group.path), "cgroup.kill"))
        found["why"] = None
    finally:
        group.close_fd()
        group.remove()
    try:
        with open(parent / "cgroup.controllers") as f:
            offered = f.read().split()
    except OSError:
        offered = []
    for name in CONTROLLERS:
        ok = name in offered
        why = None if ok else f"{parent}/cgroup.controllers does not offer it"
        found["controllers"][name] = {"usable": ok, "why": why}
    return found


def gather() -> dict[str, Any]:
    """Everything ``check`` reports, as one JSON-ready document (schema ``version`` 1)."""
    from ..stage import NATIVE_STAGE, stage_command

    status = read_status(None)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    command = stage_command()
    return {
        "version": 1,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cap_last_cap": last_cap,
        "process": {
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "sets": {name: status.get(name, "").strip() for name in SETS},
            "no_new_privs": status.get("NoNewPrivs", "").strip() == "1",
        },
        "ambient": _ambient(),
        "stage": {
            "kind": "native" if command[0] == NATIVE_STAGE else "python",
            "command": list(command),
        },
        "landlock": _landlock(),
        "seccomp": _seccomp(),
        "cgroup": _cgroup(),
        "namespaces": {name: _namespace(name) for name in NAMESPACES},
    }


def usable(doc: dict[str, Any], feature: str) -> bool:
    """Whether ``feature`` (one of :data:`FEATURES`) is usable according to ``doc``."""
    if feature.startswith("ns-"):
        return bool(doc["namespaces"][feature[3:]]["usable"])
    if feature in ("cgroup-" + name for name in CONTROLLERS):
        return bool(doc["cgroup"]["usable"] and doc["cgroup"]["controllers"][feature[7:]]["usable"])
    return bool(
        {
            "landlock": doc["landlock"]["usable"],
            "landlock-tcp": doc["landlock"]["tcp"],
            "seccomp": doc["seccomp"]["usable"],
            "seccomp-notify": doc["seccomp"]["user_notif"],
            "cgroup": doc["cgroup"]["usable"],
            "cgroup-kill": doc["cgroup"]["kill"],
        }[feature]
    )


def _words(doc: dict[str, Any]) -> list[tuple[str, str]]:
    def yes(entry: dict[str, Any], what: str = "yes") -> str:
        return what if entry["usable"] else f"no: {entry['why']}"

    ll = doc["landlock"]
    parts = [p for p, on in (("files", ll["filesystem"]), ("truncate", ll["truncate"]),
                             ("TCP", ll["tcp"]), ("device ioctls", ll["ioctl_dev"]),
                             ("scopes", ll["scopes"])) if on]  # fmt: skip
    cg = doc["cgroup"]
    proc = doc["process"]
    return [
        ("kernel", f"{doc['kernel']} ({doc['arch']}), cap_last_cap {doc['cap_last_cap']}"),
        (
            "this process",
            f"uid {proc['uid']}, CapEff {proc['sets']['CapEff']}, CapBnd "
            f"{proc['sets']['CapBnd']}, NoNewPrivs {int(proc['no_new_privs'])}",
        ),
        ("ambient caps", "yes" if doc["ambient"] else "no (Linux 4.3 or later needed)"),
        ("exec stage", f"{doc['stage']['kind']} ({' '.join(doc['stage']['command'])})"),
        ("landlock", yes(ll, f"ABI {ll['abi']}: " + ", ".join(parts))),
        ("seccomp", yes(doc["seccomp"], "yes: " + " ".join(doc["seccomp"]["actions"]))),
        (
            "cgroup v2",
            yes(cg, f"groups in {cg['parent']}, cgroup.kill {'yes' if cg['kill'] else 'no'}"),
        ),
        *((f"  {name}", yes(entry)) for name, entry in cg["controllers"].items()),
        *((f"namespace {name}", yes(entry)) for name, entry in doc["namespaces"].items()),
    ]


def check(json_out: bool, need: str | None) -> int:
    """Print what this host can enforce; with ``need``, exit 1 unless each is usable."""
    wanted = need.split(",") if need is not None else []
    for item in wanted:
        if item not in FEATURES:
            fail(f"check --need: {item!r} is not one of {', '.join(FEATURES)}")
    doc = gather()
    if json_out:
        import json

        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        for label, text in _words(doc):
            print(f"{label:<16} {text}")
    missing = [item for item in wanted if not usable(doc, item)]
    if missing:
        print(f"hardexec: check: not usable here: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0
