"""Named groups of syscalls for :class:`~hardexec.confine.config.SyscallFilter` rules.

hardexec's own groups, in the spirit of systemd's ``SystemCallFilter=`` sets. A group names
syscalls and other groups (``@privileged`` holds ``@mount``); expansion is recursive. Names a
group lists that the native architecture lacks (``open`` and the other legacy calls on aarch64,
calls newer than the kernel headers) are skipped when a filter is compiled.

- ``@default``: what every program needs, always allowed in allow-list mode: memory mapping,
  thread and futex set-up, exiting, clocks and sleeps, reading its own ids and limits, and
  ``execve`` (the stage execs the program after installing the filter).
- ``@basic-io``: reading, writing, seeking, duplicating and closing open descriptors, and
  moving data between them (sendfile, splice, copy_file_range).
- ``@file-system``: opening, inspecting, creating, changing and removing files, directories
  and links; attributes, extended attributes, locks, syncing, ioctl, inotify, mount info.
- ``@process``: creating, executing, waiting for and signalling processes and threads;
  sessions, process groups, priorities, scheduling, rlimits, prctl, personality.
- ``@signal``: signal handlers, masks, waiting for signals, signalfd, sending signals.
- ``@network``: sockets: creating, binding, connecting, sending, receiving, options.
- ``@io-event``: waiting on many descriptors: poll, select, epoll, eventfd.
- ``@ipc``: pipes and System V / POSIX shared memory, semaphores and message queues.
- ``@timer``: interval timers, POSIX timers and timerfd (reading clocks is in ``@default``).
- ``@memory``: memory locking, NUMA policy, protection keys, memfd, userfaultfd, sealing.
- ``@aio``: Linux native asynchronous I/O (io_setup, io_submit, …).
- ``@credentials``: changing user and group ids and capabilities (reading them is default).
- ``@hostname``: setting the host and domain name (of the program's uts namespace).
- ``@security``: the program confining itself further: seccomp, Landlock, LSM attributes.
- ``@system-info``: system-wide information: sysinfo, getcpu, uname.
- ``@mount``: mounting and changing the root: mount, the new mount API, pivot_root, chroot.
- ``@namespace``: entering and creating namespaces: unshare, setns (``clone`` with CLONE_NEW*
  flags is refused by an argument rule of ``@default-deny``, not by this group).
- ``@debug``: inspecting other processes and the kernel: ptrace, process_vm_*, perf events.
- ``@module``: loading and unloading kernel modules.
- ``@reboot``: rebooting and loading a new kernel (kexec).
- ``@swap``: enabling and disabling swap.
- ``@clock``: setting or adjusting the system clock.
- ``@raw-io``: raw access to I/O ports and PCI configuration.
- ``@keyring``: the kernel's key retention service.
- ``@bpf``: the bpf syscall (loading eBPF programs and maps).
- ``@io-uring``: io_uring, which runs I/O outside the reach of seccomp's view of syscalls.
- ``@cpu-emulation``: legacy x86 modes: LDT segments and vm86.
- ``@obsolete``: calls unused for decades or never implemented.
- ``@privileged``: the dangerous calls that need a capability: ``@module``, ``@reboot``,
  ``@swap``, ``@clock``, ``@raw-io``, ``@mount``, ``@bpf``, accounting, quotas, the kernel
  log, file handles, fanotify, vhangup.
- ``@default-deny``: what ``SyscallFilter(default=True)`` refuses, in the spirit of the
  default profiles of Docker and podman: ``@debug``, ``@module``, ``@reboot``, ``@swap``,
  ``@clock``, ``@raw-io``, ``@mount``, ``@keyring``, ``@bpf``, ``@io-uring``,
  ``@cpu-emulation``, ``@obsolete``, ``@namespace``, userfaultfd, acct, quotactl,
  quotactl_fd, syslog, vhangup, open_by_handle_at; ``clone`` with any CLONE_NEW* flag
  (EPERM, other clones run); and ``clone3`` with ENOSYS (its flags are in memory, out of a
  filter's reach, so glibc is told it does not exist and falls back on ``clone``, whose flags
  are checked, as container runtimes do). ``personality`` is left out: programs set their own
  execution domain with it (setarch, emulators), and none of its flags grants a privilege.

A group entry may pin an action (``clone3:ENOSYS``): the action the group is denied with
does not replace it.
"""

from __future__ import annotations

from .._record import frozen

__all__ = [
    "ARG_RULES",
    "CLONE_NEW_FLAGS",
    "GROUPS",
    "DENY_ONLY",
    "ArgRule",
    "expand",
]

# The namespace flags of clone(2), as <linux/sched.h> defines them.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_FLAGS = (
    CLONE_NEWTIME
    | CLONE_NEWNS
    | CLONE_NEWCGROUP
    | CLONE_NEWUTS
    | CLONE_NEWIPC
    | CLONE_NEWUSER
    | CLONE_NEWPID
    | CLONE_NEWNET
)

GROUPS: dict[str, tuple[str, ...]] = {
    "@default": (
        "brk", "mmap", "munmap", "mprotect", "madvise", "mremap", "arch_prctl",
        "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex",
        "futex_waitv", "futex_wait", "futex_wake", "futex_requeue", "getrandom", "exit",
        "exit_group", "rt_sigreturn", "restart_syscall", "clock_gettime", "clock_getres",
        "gettimeofday", "clock_nanosleep", "nanosleep", "getpid", "gettid", "getppid",
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "getpgid", "getpgrp", "getsid", "prlimit64", "getrlimit", "sched_yield",
        "sched_getaffinity", "membarrier", "uname", "time", "pause", "execve",
    ),
    "@basic-io": (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
        "preadv2", "pwritev2", "close", "close_range", "dup", "dup2", "dup3", "lseek",
        "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
    ),
    "@file-system": (
        "open", "openat", "openat2", "creat", "stat", "fstat", "lstat", "newfstatat",
        "statx", "access", "faccessat", "faccessat2", "getdents", "getdents64", "getcwd",
        "chdir", "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
        "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "readlink",
        "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown",
        "lchown", "fchownat", "umask", "truncate", "ftruncate", "fallocate", "fadvise64",
        "readahead", "fcntl", "flock", "ioctl", "statfs", "fstatfs", "utime", "utimes",
        "utimensat", "futimesat", "mknod", "mknodat", "inotify_init", "inotify_init1",
        "inotify_add_watch", "inotify_rm_watch", "sync", "syncfs", "fsync", "fdatasync",
        "sync_file_range", "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr",
        "lsetxattr", "fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr",
        "listxattrat", "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
        "file_getattr", "file_setattr", "cachestat", "statmount", "listmount",
    ),
    "@process": (
        "clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group",
        "wait4", "waitid", "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal",
        "pidfd_getfd", "process_mrelease", "setsid", "setpgid", "prctl", "personality",
        "getpriority", "setpriority", "ioprio_get", "ioprio_set", "sched_setaffinity",
        "sched_getaffinity", "sched_setparam", "sched_getparam", "sched_setscheduler",
        "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "sched_setattr", "sched_getattr", "sched_yield", "capget",
        "set_tid_address", "set_thread_area", "get_thread_area", "setrlimit", "prlimit64",
        "getrusage", "times",
    ),
    "@signal": (
        "rt_sigaction", "rt_sigprocmask", "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigreturn", "sigaltstack", "signalfd",
        "signalfd4", "kill", "tkill", "tgkill", "pidfd_send_signal", "pause",
    ),
    "@network": (
        "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
        "getsockname", "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom",
        "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    ),
    "@io-event": (
        "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
        "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    ),
    "@ipc": (
        "pipe", "pipe2", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop",
        "semtimedop", "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open",
        "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    ),
    "@timer": (
        "alarm", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_settime",
        "timer_gettime", "timer_getoverrun", "timerfd_create", "timerfd_settime",
        "timerfd_gettime",
    ),
    "@memory": (
        "mlock", "mlock2", "munlock", "mlockall", "munlockall", "mincore", "msync", "mbind",
        "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "migrate_pages",
        "move_pages", "memfd_create", "memfd_secret", "pkey_alloc", "pkey_free",
        "pkey_mprotect", "process_madvise", "remap_file_pages", "map_shadow_stack", "mseal",
        "userfaultfd",
    ),
    "@aio": ("io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"),
    "@credentials": (
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
        "setfsuid", "setfsgid", "capset",
    ),
    "@hostname": ("sethostname", "setdomainname"),
    "@security": (
        "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        "lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules",
    ),
    "@system-info": ("sysinfo", "getcpu", "uname"),
    "@mount": (
        "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
        "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
    ),
    # clone3's flags are in memory the filter cannot read: ENOSYS, so glibc uses clone, whose
    # CLONE_NEW* flags the argument rule below refuses.
    "@namespace": ("unshare", "setns", "clone3:ENOSYS"),
    "@debug": (
        "ptrace", "process_vm_readv", "process_vm_writev", "perf_event_open", "kcmp",
        "lookup_dcookie", "pidfd_getfd", "process_madvise",
    ),
    "@module": ("init_module", "finit_module", "delete_module", "create_module", "query_module"),
    "@reboot": ("reboot", "kexec_load", "kexec_file_load"),
    "@swap": ("swapon", "swapoff"),
    "@clock": ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime"),
    "@raw-io": ("ioperm", "iopl", "pciconfig_read", "pciconfig_write", "pciconfig_iobase"),
    "@keyring": ("add_key", "request_key", "keyctl"),
    "@bpf": ("bpf",),
    "@io-uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "@cpu-emulation": ("modify_ldt", "vm86", "vm86old"),
    "@obsolete": (
        "uselib", "_sysctl", "ustat", "sysfs", "nfsservctl", "create_module",
        "get_kernel_syms", "query_module", "afs_syscall", "tuxcall", "security", "vserver",
        "getpmsg", "putpmsg", "epoll_ctl_old", "epoll_wait_old",
    ),
    "@privileged": (
        "@module", "@reboot", "@swap", "@clock", "@raw-io", "@mount", "@bpf", "acct",
        "quotactl", "quotactl_fd", "syslog", "vhangup", "open_by_handle_at",
        "name_to_handle_at", "fanotify_init", "fanotify_mark", "lookup_dcookie",
    ),
    "@default-deny": (
        "@debug", "@module", "@reboot", "@swap", "@clock", "@raw-io", "@mount", "@keyring",
        "@bpf", "@io-uring", "@cpu-emulation", "@obsolete", "@namespace", "userfaultfd",
        "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "open_by_handle_at",
    ),
}  # fmt: skip

# Groups that only make sense as deny rules (they pin actions and carry argument rules).
DENY_ONLY = frozenset({"@default-deny"})


@frozen
class ArgRule:
    """Deny ``syscall`` only when argument ``arg`` (its low 32 bits) has any of ``flags``."""

    syscall: str
    arg: int  # 0 to 5
    flags: int


# Argument rules a group carries besides its names; denied with the group's action.
ARG_RULES: dict[str, tuple[ArgRule, ...]] = {
    # clone(flags, ...) takes its flags first on both x86_64 and aarch64.
    "@namespace": (ArgRule("clone", 0, CLONE_NEW_FLAGS),),
}


def expand(group: str) -> tuple[tuple[str, ...], tuple[ArgRule, ...]]:
    """A group's syscall entries (names, some with a pinned ``:ACTION``) and argument rules,
    subgroups expanded recursively, in order, each once.

    Raises:
        KeyError: ``group`` (or a group it names) is not one of :data:`GROUPS`.
    """
    names: dict[str, None] = {}  # a dict keeps the first-seen order
    rules: dict[ArgRule, None] = {}
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:  # a group met twice (or one naming itself) adds nothing new
            return
        seen.add(name)
        for rule in ARG_RULES.get(name, ()):
            rules[rule] = None
        for entry in GROUPS[name]:
            if entry.startswith("@"):
                visit(entry)
            else:
                names[entry] = None

    visit(group)
    return tuple(names), tuple(rules)
