"""Pure-Python twin of stage.c, used only where the native stage could not be built.

Run as a fresh interpreter (``python -I -S twin.py OPTIONS -- PROGRAM [ARG...]``), never imported
by the parent: it is a separate process image, so nothing here runs between fork() and exec() of
the launcher. It takes the same options, runs the same steps in the same order, writes the same
report records and exits with the same codes as stage.c; read that file for the reasons.
This file imports only the standard library (``-I -S`` gives it no site-packages).

CPython's own start-up changes three things a C program would not, and the twin undoes each:
it ignores SIGPIPE and SIGXFSZ (put back to SIG_DFL; the launcher lists in --ignore-signals
what must stay ignored), installs a SIGINT handler (back to SIG_DFL, so a ^C ends the stage as
it ends stage.c), and may coerce the C locale by adding LC_CTYPE to its environment (the
program's environment comes from --env-fd, or else from /proc/self/environ, which holds the
environment as it was at exec). Any exception becomes a failure record, never a traceback and
an exit status that could pass for the program's.

The confinement steps (namespaces, Landlock, the pid namespace's relay, seccomp) live in
twin_confine.py, loaded only for a plan that asks for one of them.
"""

import signal

if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import array  # after SIGINT: a ^C during these imports must end the stage plainly
import contextlib
import ctypes
import errno
import os
import resource as resource_mod
import sys

MAX_CAP = 63
MAX_GROUPS = 65536  # the kernel's NGROUPS_MAX
MAX_RLIMITS = 16  # the kernel's RLIM_NLIMITS
EXIT_STAGE, EXIT_NOEXEC, EXIT_NOENT = 125, 126, 127
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_KEEPCAPS = 23, 24, 8
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_SET_PDEATHSIG, PR_GET_SECUREBITS = 38, 47, 1, 27
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
PR_SET_SECUREBITS = 28
PTRACE_TRACEME = 0
SECBITS_LOCKED_NOROOT = 0x0B  # SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | NO_SETUID_FIXUP_LOCKED
CAP_V3 = 0x20080522

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
libc.prctl.restype = ctypes.c_int
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


report_fd = -1
program_name = b""


# The errnos stage.c carries texts for (what its syscalls can return); the texts themselves are
# the C library's, which os.strerror gives.
KNOWN_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "E2BIG", "ENOEXEC", "EBADF", "EAGAIN", "ENOMEM",
        "EACCES", "EFAULT", "EBUSY", "ENOTDIR", "EISDIR", "EINVAL", "ENFILE", "EMFILE", "ETXTBSY",
        "ENAMETOOLONG", "ENOSYS", "ELOOP", "ELIBBAD", "ENODEV", "ENOSPC", "ENOMSG", "EUSERS",
        "EOPNOTSUPP",
    )
)  # fmt: skip


def error_text(err):
    return os.strerror(err) if err in KNOWN_ERRORS else f"Unknown error {err}"


NEEDS = {
    "setgroups": "the launcher lacks CAP_SETGID",
    "setresgid": "the launcher lacks CAP_SETGID",
    "setresuid": "the launcher lacks CAP_SETUID",
    "bounding_set": "the launcher lacks CAP_SETPCAP",
    "keep_caps": "the launcher's permitted set lacks it",
    "unshare": "the launcher lacks CAP_SYS_ADMIN",
    "userns": "the launcher lacks CAP_SYS_ADMIN",
    "hostname": "the launcher lacks CAP_SYS_ADMIN",
    "securebits": "the launcher lacks CAP_SETPCAP",
}
ARG_LABELS = {
    "setrlimit": "resource",
    "ignore_signals": "signal",
    "landlock_path": "rule",
    "landlock_rule": "rule",
}
LINE_MAX = 4096 + 256  # stage.c's line buffer


def report(kind, step, err, arg=-1, why=None):
    if report_fd >= 0:
        data = f"{kind} {step} {err} {arg if arg >= 0 else '-'}\n".encode()
        fd = report_fd
    else:
        head = b"hardexec: warning: " if kind == "W" else b"hardexec: "
        if step == "exec":
            data = head + program_name + b": " + error_text(err).encode()
        else:
            data = head + f"{step} failed: [Errno {err}] {error_text(err)}".encode()
        if arg >= 0:
            data += f" ({ARG_LABELS.get(step, 'capability')} {arg})".encode()
        if why is None and err == errno.EPERM:
            why = NEEDS.get(step)
        if why:
            data += b": " + (why if isinstance(why, bytes) else why.encode())
        data = data[: LINE_MAX - 1] + b"\n"
        fd = 2
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass


def fail(step, err, arg=-1, why=None):
    report("F", step, err, arg, why)
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
    digits = "0123456789abcdefABCDEF"[: {8: 8, 10: 10, 16: 22}[base]]
    if not text or any(c not in digits for c in text):
        raise ValueError(text)
    value = int(text, base)
    if value > maximum:
        raise ValueError(text)
    return value


def parse_id(text):
    return parse_number(text, 10, 0xFFFFFFFE)


def parse_fd(value):
    return parse_number(value, 10, 0x7FFFFFFF)


def parse(argv):
    plan = {"uid": None, "gid": None, "groups": None, "keep": None, "strict": False}
    plan.update(nnp=False, exec=None, cgroup_fd=None, cgroup_strict=False, rlimits=[])
    plan.update(env_fd=None, groups_fd=None, parent=None, ignore=set())
    plan.update(umask=None, unshare=0, hostname=None, landlock_fd=None, lock_securebits=False)
    plan.update(seccomp_fd=None, seccomp_notify_fd=None, in_pid_ns=False, trace_exec=False)
    plan.update(tracer=None)
    try:
        index = argv.index("--")
    except ValueError:
        index = len(argv)
    try:
        for arg in argv[:index]:
            name, eq, value = arg.partition("=")
            if not (parse_flag(plan, arg) or (eq and parse_option(plan, name, value))):
                raise ValueError(arg)
    except ValueError:
        fail("arguments", errno.EINVAL)
    plan["argv"] = [os.fsencode(arg) for arg in argv[index + 1 :]]
    if not plan["argv"] or (plan["seccomp_notify_fd"] is not None and plan["seccomp_fd"] is None):
        fail("arguments", errno.EINVAL)
    if plan["hostname"] is not None and not plan["unshare"] & NAMESPACES["uts"]:
        fail("arguments", errno.EINVAL)  # it would rename the caller's host
    if plan["trace_exec"] and plan["unshare"] & NAMESPACES["pid"]:
        fail("arguments", errno.EINVAL)  # the relay would be the tracer
    return plan


def parse_flag(plan, arg):
    """An option without a value; False when ``arg`` is none of them."""
    if arg == "--clear-groups":
        plan["groups_fd"] = None
        plan["groups"] = []
    elif arg in ("--cgroup-strict", "--strict", "--nnp", "--lock-securebits", "--trace-exec"):
        plan[arg[2:].replace("-", "_")] = True
    else:
        return False
    return True


FD_OPTIONS = (
    "--env-fd", "--cgroup-fd", "--groups-fd", "--landlock-fd", "--seccomp-fd",
    "--seccomp-notify-fd",
)  # fmt: skip
NAMESPACES = {  # --unshare's names, as CLONE_NEW* flags
    "user": 0x10000000,
    "net": 0x40000000,
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "pid": 0x20000000,
}


def parse_option(plan, name, value):
    """``--name=value``; False when ``name`` is no option of the stage."""
    global report_fd
    if name == "--report-fd":
        fd = parse_fd(value)
        try:
            os.set_inheritable(fd, False)  # close-on-exec: EOF means a good exec
        except OSError as exc:
            fail("report_fd", exc.errno)
        report_fd = fd
    elif name in FD_OPTIONS:
        plan[name[2:].replace("-", "_")] = parse_fd(value)
        if name == "--groups-fd":
            plan["groups"] = []
    elif name == "--rlimit" and len(plan["rlimits"]) < MAX_RLIMITS:
        resource, colon, limit = value.partition(":")
        if not colon:
            raise ValueError(value)
        number = parse_number(resource, 10, MAX_RLIMITS - 1)
        plan["rlimits"].append((number, parse_number(limit, 10, 2**63 - 1)))
    elif name in ("--uid", "--gid"):
        plan[name[2:]] = parse_id(value)
    elif name == "--drop-caps" and len(value) <= 16:
        plan["keep"] = parse_number(value, 16, (1 << 64) - 1)
    elif name == "--trace-exec":
        plan["tracer"] = parse_number(value, 10, 0x7FFFFFFF)
        if not plan["tracer"]:
            raise ValueError(value)
        plan["trace_exec"] = True
    elif name == "--die-with-parent":
        plan["parent"] = parse_number(value, 10, 0x7FFFFFFF)
        if not plan["parent"]:
            raise ValueError(value)
    elif name == "--ignore-signals":
        for item in value.split(","):
            number = parse_number(item, 10, 64)
            if not number:
                raise ValueError(item)
            plan["ignore"].add(number)
    elif name == "--exec":
        plan["exec"] = os.fsencode(value)
    elif name == "--umask" and len(value) <= 4:
        plan["umask"] = parse_number(value, 8, 0o777)
    elif name == "--unshare":
        for item in value.split(","):
            flag = NAMESPACES.get(item, 0)  # unknown or empty: 0
            if not flag or plan["unshare"] & flag:  # repeated, even across two --unshare
                raise ValueError(item)
            plan["unshare"] |= flag
    elif name == "--hostname":
        plan["hostname"] = os.fsencode(value)
    else:
        return False
    return True


def read_memfd(plan, step):
    """The whole content of the memfd named by ``step`` (``env_fd``, ``groups_fd``,
    ``landlock_fd``, ``seccomp_fd``), then closed; a failure to read it aborts as that step."""
    fd = plan[step]
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    except OSError as exc:
        fail(step, exc.errno)
    os.close(fd)
    return b"".join(chunks)


def load_env(plan):
    """The program's environment: "NAME=value\\0" entries, as stage.c reads them."""
    data = read_memfd(plan, "env_fd")
    if data and not data.endswith(b"\0"):
        fail("env_fd", errno.EINVAL)
    return data.split(b"\0")[:-1]


def own_environ():
    """The environment this process was exec'd with, before CPython's locale coercion."""
    with open("/proc/self/environ", "rb") as f:
        return f.read().split(b"\0")[:-1]


def load_groups(plan):
    data = read_memfd(plan, "groups_fd")
    if len(data) % 4 or len(data) // 4 > MAX_GROUPS:
        fail("groups_fd", errno.EINVAL)
    groups = array.array("I", data)
    if 0xFFFFFFFF in groups:
        fail("groups_fd", errno.EINVAL)
    return list(groups)


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


def root_regains(plan):
    """stage.c's root_regains: execve would give a uid-0 program its whole bounding set."""
    bits, _ = prctl(PR_GET_SECUREBITS)
    if plan["nnp"] or (bits > 0 and bits & 1):
        return False
    if plan["uid"] is not None:
        return plan["uid"] == 0
    ruid, euid, _ = os.getresuid()
    return ruid == 0 or euid == 0


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
    if first is not None and root_regains(plan):
        why = "no CAP_SETPCAP: root would regain every capability at exec"
        fail("bounding_set", *first, why=why)
    if first is not None and plan["strict"]:
        fail("bounding_set", *first)
    if first is not None:
        why = (
            None
            if plan["nnp"]
            else (
                "the launcher lacks CAP_SETPCAP; set-user-ID and file-capability programs it runs "
                "can regain what stays in the bounding set; no_new_privs prevents that"
            )
        )
        report("W", "bounding_set", *first, why=why)


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


def set_signals(plan):
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # CPython ignored them, not the launcher
        signal.signal(sig, signal.SIG_DFL)
    for sig in sorted(plan["ignore"]):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):  # SIGKILL/SIGSTOP, or past the kernel's last signal
            fail("ignore_signals", errno.EINVAL, sig)


def trace_exec(tracer, parent):
    """stage.c's trace_exec: the parent traces us, we stop for it, and check it is still there;
    with the tracer named, we die with it until it has set EXITKILL, and refuse another."""
    if tracer is not None:
        result, err = prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if result < 0:
            fail("trace", err)
        if os.getppid() != tracer:
            fail("trace", errno.ESRCH, why="the launcher has already exited")
    if libc.ptrace(PTRACE_TRACEME, 0, None, None) < 0:
        fail("trace", ctypes.get_errno())
    if report_fd >= 0:
        report("T", "trace", 0)
    os.kill(os.getpid(), signal.SIGSTOP)
    if libc.ptrace(PTRACE_TRACEME, 0, None, None) == 0:
        fail("trace", errno.ESRCH, why="the launcher stopped tracing before the program started")
    if tracer is not None and parent is None:
        result, err = prctl(PR_SET_PDEATHSIG, 0)
        if result < 0:
            fail("trace", err)


def die_with_parent(expected):
    result, err = prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if result < 0:
        fail("die_with_parent", err)
    if os.getppid() != expected:
        fail("die_with_parent", errno.ESRCH, why="the parent has already exited")


def lock_securebits(plan):
    result, err = prctl(PR_SET_SECUREBITS, SECBITS_LOCKED_NOROOT)
    if result < 0:
        cap_failed(plan, "securebits", err)


def prepare_exec(plan):
    """What execve needs, built before the seccomp filter is installed: from then on, every
    syscall this code makes is the filter's to judge (an allow-list would refuse Python's)."""
    argv, env = plan["argv"], plan["env"]
    file = argv[0] if plan["exec"] is None else plan["exec"]  # "" is a name too
    if b"/" in file:
        candidates = [file]
    else:
        path = next((e[5:] for e in env if e.startswith(b"PATH=")), b"/bin:/usr/bin")  # defpath
        candidates = [os.path.join(d, file) if d else file for d in path.split(b":")]
    # execve(2) itself, not os.execve: the environment passes as the exact entries received
    # (os.execve wants a mapping, which would merge duplicates and need a "=" in each).
    c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
    c_env = (ctypes.c_char_p * (len(env) + 1))(*env, None)
    return candidates, c_argv, c_env


def exec_program(candidates, c_argv, c_env):
    saved = last = 0
    for candidate in candidates:
        libc.execve(candidate, c_argv, c_env)
        last = ctypes.get_errno()
        if last not in (errno.ENOENT, errno.ENOTDIR) and not saved:
            saved = last
    fail("exec", saved or last)


def load_confine():
    """twin_confine.py, by path: -I leaves this script's directory off sys.path."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "twin_confine.py")
    spec = importlib.util.spec_from_file_location("hardexec_twin_confine", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.twin = sys.modules[__name__]  # its steps report and fail through this module
    return module


def confines(plan):
    """Whether the plan asks for a step of twin_confine.py."""
    optional = ("hostname", "landlock_fd", "seccomp_fd")
    return bool(plan["unshare"]) or any(plan[key] is not None for key in optional)


def main():
    global program_name
    plan = parse(sys.argv[1:])
    program_name = plan["argv"][0] if plan["exec"] is None else plan["exec"]
    plan["env"] = load_env(plan) if plan["env_fd"] is not None else own_environ()
    if plan["groups_fd"] is not None:
        plan["groups"] = load_groups(plan)
    confine = load_confine() if confines(plan) else None
    if confine:
        confine.load_rules(plan)
    if plan["trace_exec"]:
        trace_exec(plan["tracer"], plan["parent"])
    if plan["cgroup_fd"] is not None:
        join_cgroup(plan)
    set_rlimits(plan)
    if plan["umask"] is not None:
        os.umask(plan["umask"])
    if confine:
        confine.enter_namespaces(plan)
        confine.create_ruleset(plan)
        if plan["unshare"] & NAMESPACES["pid"]:
            confine.enter_pid_namespace(plan)  # returns in the program's process only
    change_identity(plan)
    set_signals(plan)
    if plan["parent"] is not None:  # from inside a new pid namespace, a parent outside is 0
        die_with_parent(0 if plan["in_pid_ns"] else plan["parent"])
    if confine:
        confine.restrict_self(plan)
        confine.prepare_filter(plan)
    prepared = prepare_exec(plan)
    if confine:
        confine.install_filter(plan)
    exec_program(*prepared)


def change_identity(plan):
    """Groups, gid, the bounding set, uid, securebits, capabilities, no_new_privs."""
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
    if plan["lock_securebits"]:
        lock_securebits(plan)
    if drop:
        set_ambient(plan, set_caps(plan))
    if plan["nnp"]:
        result, err = prctl(PR_SET_NO_NEW_PRIVS, 1)
        if result < 0:
            fail("no_new_privs", err)


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # SystemExit never comes here: fail() uses os._exit
        fail("internal", getattr(exc, "errno", None) or errno.EIO)
