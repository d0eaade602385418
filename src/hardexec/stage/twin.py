"""Pure-Python twin of stage.c, used only where the native stage could not be built.

Run as a fresh interpreter (``python -I -S twin.py OPTIONS -- PROGRAM [ARG...]``), never imported
by the parent: it is a separate process image, so nothing here runs between fork() and exec() of
the launcher. It takes the same options, runs the same steps in the same order, writes the same
report records and exits with the same codes as stage.c; read that file for the reasons.
This file imports only the standard library (``-I -S`` gives it no site-packages).

One difference cannot be avoided: CPython ignores SIGPIPE and SIGXFSZ at start-up, so the twin
puts both back to SIG_DFL before exec, which is what ``subprocess`` does by default
(``restore_signals=True``); a launcher passing ``restore_signals=False`` gets them reset anyway.
"""

import contextlib
import ctypes
import errno
import os
import resource as resource_mod
import signal
import sys

MAX_CAP = 63
MAX_GROUPS = 65536  # the kernel's NGROUPS_MAX
MAX_RLIMITS = 16  # the kernel's RLIM_NLIMITS
EXIT_STAGE, EXIT_NOEXEC, EXIT_NOENT = 125, 126, 127
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_KEEPCAPS = 23, 24, 8
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
CAP_V3 = 0x20080522

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
libc.prctl.restype = ctypes.c_int


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


report_fd = -1


# The errnos stage.c carries texts for (what its syscalls can return); the texts themselves are
# the C library's, which os.strerror gives.
KNOWN_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ENOENT", "EINTR", "EIO", "E2BIG", "ENOEXEC", "EBADF", "EAGAIN", "ENOMEM",
        "EACCES", "EFAULT", "EBUSY", "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ETXTBSY",
        "ENAMETOOLONG", "ENOSYS", "ELOOP", "ELIBBAD",
    )
)  # fmt: skip


def error_text(err):
    return os.strerror(err) if err in KNOWN_ERRORS else f"Unknown error {err}"


def report(kind, step, err, arg=-1):
    if report_fd >= 0:
        line = f"{kind} {step} {err} {arg if arg >= 0 else '-'}\n"
        fd = report_fd
    else:
        warn = "warning: " if kind == "W" else ""
        line = f"hardexec-stage: {warn}{step} failed: [Errno {err}] {error_text(err)}"
        label = "resource" if step == "setrlimit" else "capability"
        line += f" ({label} {arg})\n" if arg >= 0 else "\n"
        fd = 2
    data = line.encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


def fail(step, err, arg=-1):
    report("F", step, err, arg)
    if step != "exec":
        os._exit(EXIT_STAGE)
    os._exit(EXIT_NOENT if err in (errno.ENOENT, errno.ENOTDIR) else EXIT_NOEXEC)


def cap_failed(plan, step, err, cap=-1):
    if plan["strict"]:
        fail(step, err, cap)
    report("W", step, err, cap)


def prctl(option, arg2=0):
    """prctl(2); returns (result, errno)."""
    result = libc.prctl(option, arg2, 0, 0, 0)
    return result, ctypes.get_errno() if result < 0 else 0


def parse_number(text, base, maximum):
    digits = "0123456789abcdefABCDEF"[: 10 if base == 10 else 22]
    if not text or any(c not in digits for c in text):
        raise ValueError(text)
    value = int(text, base)
    if value > maximum:
        raise ValueError(text)
    return value


def parse_id(text):
    return parse_number(text, 10, 0xFFFFFFFE)


def parse(argv):
    global report_fd
    plan = {"uid": None, "gid": None, "groups": None, "keep": None, "strict": False}
    plan.update(nnp=False, exec=None, cgroup_fd=None, cgroup_strict=False, rlimits=[])
    try:
        index = argv.index("--")
    except ValueError:
        index = len(argv)
    try:
        for arg in argv[:index]:
            name, eq, value = arg.partition("=")
            if name == "--report-fd" and eq:
                fd = parse_number(value, 10, 0x7FFFFFFF)
                try:
                    os.set_inheritable(fd, False)  # close-on-exec: EOF means a good exec
                except OSError as exc:
                    fail("report_fd", exc.errno)
                report_fd = fd
            elif name == "--cgroup-fd" and eq:
                plan["cgroup_fd"] = parse_number(value, 10, 0x7FFFFFFF)
            elif arg == "--cgroup-strict":
                plan["cgroup_strict"] = True
            elif name == "--rlimit" and eq and len(plan["rlimits"]) < MAX_RLIMITS:
                resource, colon, limit = value.partition(":")
                if not colon:
                    raise ValueError(value)
                number = parse_number(resource, 10, MAX_RLIMITS - 1)
                plan["rlimits"].append((number, parse_number(limit, 10, 2**63 - 1)))
            elif name == "--uid" and eq:
                plan["uid"] = parse_id(value)
            elif name == "--gid" and eq:
                plan["gid"] = parse_id(value)
            elif name == "--groups" and eq and value.count(",") < MAX_GROUPS:
                plan["groups"] = [parse_id(item) for item in value.split(",")]
            elif arg == "--clear-groups":
                plan["groups"] = []
            elif name == "--drop-caps" and eq and len(value) <= 16:
                plan["keep"] = parse_number(value, 16, (1 << 64) - 1)
            elif arg == "--strict":
                plan["strict"] = True
            elif arg == "--nnp":
                plan["nnp"] = True
            elif name == "--exec" and eq:
                plan["exec"] = os.fsencode(value)
            else:
                raise ValueError(arg)
    except ValueError:
        fail("arguments", errno.EINVAL)
    plan["argv"] = [os.fsencode(arg) for arg in argv[index + 1 :]]
    if not plan["argv"]:
        fail("arguments", errno.EINVAL)
    return plan


def join_cgroup(plan):
    try:
        os.write(plan["cgroup_fd"], b"0")
        err = 0
    except OSError as exc:
        err = exc.errno
    with contextlib.suppress(OSError):
        os.close(plan["cgroup_fd"])
    if err:
        if plan["cgroup_strict"]:
            fail("cgroup_join", err)
        report("W", "cgroup_join", err)


def set_rlimits(plan):
    for resource, value in plan["rlimits"]:
        try:
            _, hard = resource_mod.prlimit(0, resource)
            limit = value if hard == resource_mod.RLIM_INFINITY else min(value, hard)
            resource_mod.prlimit(0, resource, (limit, limit))
        except OSError as exc:
            fail("setrlimit", exc.errno, resource)


def drop_bounding(plan):
    first = None
    for cap in range(MAX_CAP + 1):
        present, _ = prctl(PR_CAPBSET_READ, cap)
        if present < 0:
            break  # EINVAL: past the kernel's cap_last_cap
        if not present or plan["keep"] >> cap & 1:
            continue
        result, err = prctl(PR_CAPBSET_DROP, cap)
        if result < 0 and first is None:
            first = (err, cap)
            if plan["strict"]:
                break
    if first is not None:
        cap_failed(plan, "bounding_set", *first)


def set_caps(plan):
    header = CapHeader(CAP_V3, 0)
    data = (CapData * 2)()
    if libc.capget(ctypes.byref(header), data) < 0:
        cap_failed(plan, "capget", ctypes.get_errno())
        return 0
    permitted = data[1].permitted << 32 | data[0].permitted
    missing = plan["keep"] & ~permitted
    for cap in range(MAX_CAP + 1):
        if missing >> cap & 1:
            cap_failed(plan, "keep_caps", errno.EPERM, cap)
    want = plan["keep"] & permitted
    for word in range(2):
        bits = want >> (32 * word) & 0xFFFFFFFF
        data[word].effective = data[word].permitted = data[word].inheritable = bits
    if libc.capset(ctypes.byref(header), data) < 0:
        cap_failed(plan, "capset", ctypes.get_errno())
        return 0
    return want


def set_ambient(plan, kept):
    result, err = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if result < 0:
        cap_failed(plan, "ambient_clear", err)
    for cap in range(MAX_CAP + 1):
        if kept >> cap & 1:
            result = libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0)
            if result < 0:
                cap_failed(plan, "ambient_raise", ctypes.get_errno(), cap)


def exec_program(plan):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    argv, env = plan["argv"], os.environb
    file = plan["exec"] or argv[0]
    if plan["exec"] or b"/" in file:
        candidates = [file]
    else:
        path = env.get(b"PATH", b"/bin:/usr/bin")  # os.defpath, as CPython's subprocess
        candidates = [os.path.join(d, file) if d else file for d in path.split(b":")]
    saved = last = 0
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except OSError as exc:
            last = exc.errno
            if last not in (errno.ENOENT, errno.ENOTDIR) and not saved:
                saved = last
    fail("exec", saved or last)


def main():
    plan = parse(sys.argv[1:])
    if plan["cgroup_fd"] is not None:
        join_cgroup(plan)
    set_rlimits(plan)
    if plan["groups"] is not None:
        try:
            os.setgroups(plan["groups"])
        except OSError as exc:
            fail("setgroups", exc.errno)
    if plan["gid"] is not None:
        try:
            os.setresgid(plan["gid"], plan["gid"], plan["gid"])
        except OSError as exc:
            fail("setresgid", exc.errno)
    drop = plan["keep"] is not None
    if drop:
        drop_bounding(plan)
    if plan["uid"] is not None:
        if drop:
            result, err = prctl(PR_SET_KEEPCAPS, 1)
            if result < 0:
                cap_failed(plan, "keepcaps", err)
        try:
            os.setresuid(plan["uid"], plan["uid"], plan["uid"])
        except OSError as exc:
            fail("setresuid", exc.errno)
    if drop:
        set_ambient(plan, set_caps(plan))
    if plan["nnp"]:
        result, err = prctl(PR_SET_NO_NEW_PRIVS, 1)
        if result < 0:
            fail("no_new_privs", err)
    exec_program(plan)


if __name__ == "__main__":
    main()
