"""The twin's confinement steps: namespaces, Landlock, the pid namespace's relay, seccomp.

twin.py loads this file by path (it runs with -I, which leaves its own directory off sys.path),
and only for a plan that asks for one of these steps, so a plan without them pays nothing for
them. ``twin`` is twin.py's own module, set as this one is loaded: its fail(), report() and
memfd reader are the ones every step here uses. Step numbers and the reasons for their order
are stage.c's; plan.py gives the options and the rules' format.
"""

import contextlib
import ctypes
import errno
import os
import resource
import signal
import stat

twin = None  # twin.py's module (set by its load_confine)

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.unshare.argtypes = [ctypes.c_int]
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
libc.socket.argtypes = [ctypes.c_int] * 3
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.sendmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.sendmsg.restype = ctypes.c_ssize_t

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
AF_INET, SOCK_DGRAM, SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 2, 2, 0x8913, 0x8914, 1
NR_CLOSE_RANGE = 436  # these four have one number on every architecture
NR_LANDLOCK_CREATE, NR_LANDLOCK_ADD, NR_LANDLOCK_RESTRICT = 444, 445, 446
PATH_BENEATH, NET_PORT = 1, 2  # enum landlock_rule_type
# The rights a rule on a file (not a directory) may hold: EXECUTE, WRITE_FILE, READ_FILE,
# TRUNCATE, IOCTL_DEV. The kernel refuses a file rule with any directory right in it.
FILE_RIGHTS = 1 | 2 | 4 | 1 << 14 | 1 << 15
MAX_FILTER = 4096  # BPF_MAXINSNS; an instruction (struct sock_filter) is 8 bytes
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER = 1, 8
# seccomp(2) has no C library wrapper, so no number to look up: __NR_seccomp by machine (the
# asm-generic ones share 277).
NR_SECCOMP = {
    "x86_64": 317, "aarch64": 277, "riscv64": 277, "loongarch64": 277, "i686": 354,
    "i386": 354, "armv7l": 383, "ppc64le": 358, "ppc64": 358, "s390x": 348,
}  # fmt: skip
SOL_SOCKET = SCM_RIGHTS = 1
MSG_NOSIGNAL = 0x4000  # a parent gone: EPIPE, reported, rather than a silent SIGPIPE


class IfReq(ctypes.Structure):  # struct ifreq: the name, then ifr_flags in its 24-byte union
    _fields_ = [("name", ctypes.c_char * 16), ("flags", ctypes.c_short), ("_", ctypes.c_char * 22)]


class RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    ]  # fmt: skip


class FdMessage(ctypes.Structure):  # struct cmsghdr and one fd: CMSG_SPACE(sizeof(int)) bytes
    _fields_ = [
        ("len", ctypes.c_size_t), ("level", ctypes.c_int), ("type", ctypes.c_int),
        ("fd", ctypes.c_int),
    ]  # fmt: skip


def syscall(number, *args):
    """syscall(2), every argument passed as a long (addresses too); (result, errno)."""
    result = libc.syscall(ctypes.c_long(number), *map(ctypes.c_long, args))
    return result, ctypes.get_errno() if result < 0 else 0


def number(text, base, maximum=(1 << 64) - 1):
    return twin.parse_number(text.decode("ascii"), base, maximum)  # non-ASCII: a ValueError


# ---- step 0: the memfds ------------------------------------------------------------------


def load_rules(plan):
    """The Landlock rules and the seccomp program, read (and checked) with the other memfds."""
    if plan["landlock_fd"] is not None:
        data = twin.read_memfd(plan, "landlock_fd")
        try:
            plan["landlock"] = parse_landlock(data)
        except ValueError:
            twin.fail("landlock_fd", errno.EINVAL)
    if plan["seccomp_fd"] is not None:
        program = twin.read_memfd(plan, "seccomp_fd")
        if not program or len(program) % 8 or len(program) > MAX_FILTER * 8:
            twin.fail("seccomp_fd", errno.EINVAL)
        plan["filter"] = program


def parse_landlock(data):
    """NUL-terminated ``fs=HEX``, an optional ``net=HEX``, an optional ``scope=HEX``, then the
    ``path=HEX:PATH`` rules, then the ``port=HEX:PORT`` ones: (fs, net or None, scope or None,
    [(rule type, rights, path or port)])."""
    entries = data.split(b"\0")
    if entries.pop() or not entries or not entries[0].startswith(b"fs="):
        raise ValueError("unterminated, or not fs= first")
    fs, net, scope, rules = number(entries[0][3:], 16), None, None, []
    if len(entries) > 1 and entries[1].startswith(b"net="):
        net = number(entries.pop(1)[4:], 16)
    if len(entries) > 1 and entries[1].startswith(b"scope="):
        scope = number(entries.pop(1)[6:], 16)
    for entry in entries[1:]:
        key, _, value = entry.partition(b"=")
        rights, colon, target = value.partition(b":")
        kind = {b"path": PATH_BENEATH, b"port": NET_PORT}.get(key)
        after_ports = kind == PATH_BENEATH and rules and rules[-1][0] == NET_PORT
        if not colon or kind is None or after_ports or not target:
            raise ValueError(entry)
        if kind == NET_PORT:
            target = number(target, 10, 65535)
        rules.append((kind, number(rights, 16), target))
    return fs, net, scope, rules


# ---- step 4: namespaces ------------------------------------------------------------------


def enter_namespaces(plan):
    """unshare, our own ids mapped in a new user namespace, lo up in a new network one, then
    the host name (in the new uts namespace: the parent asks for it only with one)."""
    flags = plan["unshare"]
    if flags:
        user = flags & CLONE_NEWUSER
        euid, egid = os.geteuid(), os.getegid()  # in the new user namespace they read unmapped
        if libc.unshare(flags) < 0:
            twin.fail("userns" if user else "unshare", ctypes.get_errno())
        if user:
            map_own_ids(euid, egid)
        if flags & CLONE_NEWNET:
            loopback_up()
        name = plan["hostname"]  # without --unshare, it would rename the host itself
        if name is not None and libc.sethostname(name, len(name)) < 0:
            twin.fail("hostname", ctypes.get_errno())


def map_own_ids(euid, egid):
    """Each id mapped to itself, so the program still sees who it is. setgroups goes first: an
    unprivileged process may write gid_map only once it is denied (user_namespaces(7))."""
    for name, text in (
        ("setgroups", "deny"),
        ("uid_map", f"{euid} {euid} 1"),
        ("gid_map", f"{egid} {egid} 1"),
    ):
        try:
            fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            twin.fail("userns", exc.errno)


def loopback_up():
    """A new network namespace has only lo, and down: without it even 127.0.0.1 fails."""
    fd = libc.socket(AF_INET, SOCK_DGRAM, 0)
    if fd >= 0:
        request = IfReq(b"lo")
        if libc.ioctl(fd, SIOCGIFFLAGS, ctypes.addressof(request)) >= 0:
            request.flags |= IFF_UP
            if libc.ioctl(fd, SIOCSIFFLAGS, ctypes.addressof(request)) >= 0:
                os.close(fd)
                return
    twin.fail("loopback", ctypes.get_errno())


# ---- step 5: the Landlock ruleset --------------------------------------------------------


def create_ruleset(plan):
    """The ruleset, with each rule's path opened now: with the launcher's privileges and view
    of the files, before any of them is dropped. Enforced at step 15."""
    if plan["landlock_fd"] is None:
        return
    fs, net, scope, rules = plan["landlock"]
    attr = RulesetAttr(fs, net or 0, scope or 0)
    # 8: the ABI-1 form, which every kernel takes; 16 with network rights, 24 with scopes.
    size = 24 if scope is not None else 8 if net is None else 16
    ruleset, err = syscall(NR_LANDLOCK_CREATE, ctypes.addressof(attr), size, 0)
    if ruleset < 0:
        twin.fail("landlock", err)
    # A right the ruleset does not handle is not the rule's to give (the kernel refuses it):
    # the parent lowers the handled rights to what an older kernel has, and the rules follow.
    for index, (kind, rights, target) in enumerate(rules):
        if kind == PATH_BENEATH:
            add_path_rule(ruleset, index, rights & fs, target)
        elif rights & attr.net:  # an empty rule is refused (ENOMSG): it would allow nothing
            add_rule(ruleset, index, NET_PORT, NetPortAttr(rights & attr.net, target))
    plan["ruleset_fd"] = ruleset


def add_path_rule(ruleset, index, rights, path):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_RIGHTS
    except OSError as exc:
        twin.fail("landlock_path", exc.errno, index, why=path)  # stderr names the path
    if rights:
        add_rule(ruleset, index, PATH_BENEATH, PathBeneathAttr(rights, fd))
    os.close(fd)


def add_rule(ruleset, index, kind, attr):
    result, err = syscall(NR_LANDLOCK_ADD, ruleset, kind, ctypes.addressof(attr), 0)
    if result < 0:
        twin.fail("landlock_rule", err, index)


def restrict_self(plan):
    """Step 15: the ruleset of step 5, enforced on this process and all it starts."""
    ruleset = plan.get("ruleset_fd")
    if ruleset is None:
        return
    result, err = syscall(NR_LANDLOCK_RESTRICT, ruleset, 0)
    if result < 0:
        twin.fail("landlock", err)
    os.close(ruleset)


# ---- step 6: the pid namespace -----------------------------------------------------------


def enter_pid_namespace(plan):
    """Fork the namespace's init, then the program's process; returns in the latter only. This
    process stays outside as the relay between the parent and the program, and never returns:
    unshare(CLONE_NEWPID) moved only its future children into the namespace."""
    if plan["parent"] is not None:  # the relay dies with the parent; its init, then the rest
        twin.die_with_parent(plan["parent"])
    everything = signal.valid_signals()
    # Blocked before the forks: no signal is lost before the relay's first wait.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
    try:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        init = os.fork()
    except OSError as exc:
        twin.fail("pid_ns", exc.errno)
    if init == 0:
        run_init(read_end)
    try:
        program = os.fork()
    except OSError as exc:
        os.kill(init, signal.SIGKILL)
        twin.fail("pid_ns", exc.errno)
    if program == 0:
        os.close(read_end)
        os.close(write_end)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        plan["in_pid_ns"] = True
        return
    relay(program, init, write_end)


def run_init(read_end):
    """The namespace's init (pid 1 there). It runs nothing: it holds the namespace until the
    relay is gone (the pipe's only writer), and its death makes the kernel kill everything left
    in the namespace."""
    try:
        close_all_but(read_end)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # orphans it inherits: reaped by the kernel
        while os.read(read_end, 1):  # EOF is the hang-up: poll(2) would say POLLHUP
            pass
    finally:
        os._exit(0)


def relay(program, init, write_end):
    """Forward every signal to the program; when it ends, end the namespace, then exit as the
    program did."""
    close_all_but(write_end)  # the report pipe and the output pipes: EOF once the program is done
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a signal passed on to itself: no core
    everything = signal.valid_signals()
    while True:
        signo = signal.sigwaitinfo(everything).si_signo
        if signo != signal.SIGCHLD:
            with contextlib.suppress(OSError):
                os.kill(program, signo)
            continue
        pid, status = os.waitpid(program, os.WNOHANG)
        if pid == program:
            end_as(status, init)


def end_as(status, init):
    with contextlib.suppress(OSError):
        os.kill(init, signal.SIGKILL)
        os.waitpid(init, 0)  # returns only once every process of the namespace is gone
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    signo = os.WTERMSIG(status)
    with contextlib.suppress(OSError, ValueError):  # SIGKILL keeps its default action anyway
        signal.signal(signo, signal.SIG_DFL)
    with contextlib.suppress(OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signo})
        os.kill(os.getpid(), signo)
    os._exit(128 + signo)  # a signal that does not end a process


def close_all_but(keep):
    """Close every fd but ``keep``: close_range(2), else (before Linux 5.9) one by one."""
    ranges = [(low, high) for low, high in ((0, keep - 1), (keep + 1, 0xFFFFFFFF)) if low <= high]
    if all(syscall(NR_CLOSE_RANGE, low, high, 0)[0] == 0 for low, high in ranges):
        return
    for name in os.listdir("/proc/self/fd"):
        if int(name) != keep:
            with contextlib.suppress(OSError):
                os.close(int(name))


# ---- step 16: seccomp --------------------------------------------------------------------


def prepare_filter(plan):
    """Everything the install and the listener's sendmsg need, built while every syscall is
    still allowed: once installed, the filter judges this very process, and an allow-list
    could refuse (or, with its listener not yet sent, hold forever) a syscall Python makes."""
    if plan["seccomp_fd"] is None:
        return
    code, notify_fd = plan["filter"], plan["seccomp_notify_fd"]
    program = ctypes.create_string_buffer(code, len(code))
    fprog = SockFprog(len(code) // 8, ctypes.addressof(program))
    flags = 0 if notify_fd is None else SECCOMP_FILTER_FLAG_NEW_LISTENER
    ready = {"nr": NR_SECCOMP.get(os.uname().machine), "keep": (program, fprog)}
    ready["args"] = (SECCOMP_SET_MODE_FILTER, flags, ctypes.addressof(fprog))
    if notify_fd is not None:
        with contextlib.suppress(OSError):  # a bad fd fails at the sendmsg, as in stage.c
            os.set_inheritable(notify_fd, False)  # the program has no business with it
        ready["send"] = listener_message(notify_fd)
    plan["seccomp"] = ready


def listener_message(notify_fd):
    """sendmsg's struct msghdr: the data byte ``L`` and an SCM_RIGHTS message for one fd, the
    listener's once it exists; returned with the objects it points into."""
    data = ctypes.create_string_buffer(b"L", 1)
    iov = IoVec(ctypes.addressof(data), 1)
    fd_end = FdMessage.fd.offset + ctypes.sizeof(ctypes.c_int)  # CMSG_LEN(sizeof(int))
    control = FdMessage(fd_end, SOL_SOCKET, SCM_RIGHTS, -1)
    header = MsgHdr(iov=ctypes.addressof(iov), iovlen=1)
    header.control, header.controllen = ctypes.addressof(control), ctypes.sizeof(control)
    return {"args": (notify_fd, ctypes.addressof(header), MSG_NOSIGNAL), "control": control,
            "keep": (data, iov, header)}  # fmt: skip


def install_filter(plan):
    """Install the filter, then send its listener: the only two calls left before execve."""
    ready = plan.get("seccomp")
    if ready is None:
        return
    if ready["nr"] is None:
        twin.fail("seccomp", errno.ENOSYS)
    listener, err = syscall(ready["nr"], *ready["args"])
    if listener < 0:
        twin.fail("seccomp", err)
    send = ready.get("send")
    if send:
        send["control"].fd = listener  # close-on-exec: execve closes our copy
        while libc.sendmsg(*send["args"]) < 0:
            if ctypes.get_errno() != errno.EINTR:
                twin.fail("seccomp_notify", ctypes.get_errno())
