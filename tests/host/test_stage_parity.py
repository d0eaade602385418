"""The native stage and its pure-Python twin behave identically, byte for byte.

Each case runs both stages directly (no parent library in between) and compares exit status,
stdout and stderr, with and without a report pipe. The confinement cases (umask, namespaces,
Landlock, securebits, seccomp, the pid namespace's relay) also check what the program saw, on
the native stage's output; parity carries that over to the twin. Every case that touches a uts
namespace runs inside a throwaway one (``unshare --uts``), so no case can rename this host.
"""

import array
import ast
import contextlib
import errno
import os
import platform
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardexec import verify
from hardexec.stage import NATIVE_STAGE, TWIN_STAGE, native_available

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "src" / "hardexec" / "stage" / "stage.c"
TWIN = [sys.executable, "-I", "-S", str(TWIN_STAGE)]


@pytest.fixture(scope="module")
def libc_stage(tmp_path_factory):
    """stage.c built against the C library: the build other platforms get, tested here too."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the C-library variant of the stage")
    out = tmp_path_factory.mktemp("stage") / "hardexec-stage-libc"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(SOURCE)], check=True
    )
    return [str(out)]


@pytest.fixture(params=["installed", "libc"])
def native(request):
    """The stage the install built (freestanding here), and the C-library build."""
    if request.param == "libc":
        return request.getfixturevalue("libc_stage")
    if not native_available():
        pytest.fail("the native exec stage was not built")
    return [str(NATIVE_STAGE)]


CASES = {
    "nothing": [],
    "no-program": ["--"],
    "no-separator": ["--nnp", "true"],
    "unknown-option": ["--bogus", "--", "true"],
    "option-without-value": ["--uid", "--", "true"],
    "uid-minus-one": ["--uid=4294967295", "--", "true"],
    "uid-too-big": ["--uid=4294967296", "--", "true"],
    "uid-signed": ["--uid=-1", "--", "true"],
    "uid-plus": ["--uid=+1", "--", "true"],
    "uid-blank": ["--uid= 1", "--", "true"],
    "uid-hex": ["--uid=0x10", "--", "true"],
    "uid-empty": ["--uid=", "--", "true"],
    "groups-in-argv": ["--groups=1,2", "--", "true"],  # only by fd now
    "groups-fd": [
        "--uid=65534",
        "--gid=65534",
        "--groups-fd={groups}",
        "--",
        "grep",
        "^Groups",
        "/proc/self/status",
    ],
    "groups-fd-odd-size": ["--groups-fd={odd}", "--", "true"],
    "groups-fd-minus-one": ["--groups-fd={minus_one}", "--", "true"],
    "groups-fd-closed": ["--groups-fd=99", "--", "true"],
    "groups-fd-then-clear": ["--groups-fd={groups}", "--clear-groups", "--", "true"],
    "env-fd": ["--env-fd={env}", "--", "env"],
    "env-fd-path-search": ["--env-fd={env}", "--", "env"],
    "env-fd-empty": ["--env-fd={empty}", "--", "/usr/bin/env"],
    "env-fd-unterminated": ["--env-fd={odd}", "--", "true"],
    "env-fd-closed": ["--env-fd=99", "--", "true"],
    "ignore-signals": ["--ignore-signals=1,13,25", "--", "grep", "^SigIgn", "/proc/self/status"],
    "ignore-signals-kill": ["--ignore-signals=9", "--", "true"],
    "ignore-signals-zero": ["--ignore-signals=0", "--", "true"],
    "ignore-signals-65": ["--ignore-signals=65", "--", "true"],
    "ignore-signals-empty-item": ["--ignore-signals=1,,2", "--", "true"],
    "die-with-parent": ["--die-with-parent={parent}", "--", "echo", "ran"],
    "die-with-parent-gone": ["--die-with-parent=1", "--", "echo", "ran"],
    "die-with-parent-zero": ["--die-with-parent=0", "--", "true"],
    "exec-empty-name": ["--exec=", "--", "true"],
    "exec-searched-on-path": ["--exec=echo", "--", "x", "hi"],
    "caps-17-digits": ["--drop-caps=12345678901234567", "--", "true"],
    "caps-0x": ["--drop-caps=0x400", "--", "true"],
    "caps-not-hex": ["--drop-caps=xyz", "--", "true"],
    "caps-empty": ["--drop-caps=", "--", "true"],
    "bad-report-fd": ["--report-fd=999", "--", "true"],
    "rlimits": [
        "--rlimit=7:64",
        "--rlimit=4:0",
        "--rlimit=1:4096",
        "--",
        "sh",
        "-c",
        "ulimit -Sn; ulimit -Hn; ulimit -c; ulimit -Hf",
    ],
    "rlimit-above-hard": ["--rlimit=7:9223372036854775807", "--", "sh", "-c", "ulimit -Hn"],
    "rlimit-bad-resource": ["--rlimit=16:1", "--", "true"],
    "rlimit-no-colon": ["--rlimit=7", "--", "true"],
    "rlimit-negative": ["--rlimit=7:-1", "--", "true"],
    "rlimit-too-big": ["--rlimit=7:9223372036854775808", "--", "true"],
    "rlimit-17-times": [*["--rlimit=7:64"] * 17, "--", "true"],
    "cgroup-bad-fd": ["--cgroup-fd=99", "--", "echo", "ran"],
    "cgroup-bad-fd-strict": ["--cgroup-fd=99", "--cgroup-strict", "--", "echo", "ran"],
    "cgroup-fd-not-a-number": ["--cgroup-fd=x", "--", "true"],
    "not-found": ["--nnp", "--", "no-such-program-x"],
    "not-executable": ["--nnp", "--exec=/etc/passwd", "--", "x"],
    "exec-directory": ["--nnp", "--", "/tmp"],
    "missing-cap-warns": ["--drop-caps=0000000001000400", "--", "echo", "ran"],
    "missing-cap-strict": ["--drop-caps=0000000001000400", "--strict", "--", "echo", "ran"],
    "every-bit-as-nobody": [
        "--uid=65534",
        "--gid=65534",
        "--clear-groups",
        "--drop-caps=ffffffffffffffff",
        "--",
        "grep",
        "^Cap",
        "/proc/self/status",
    ],
    "switched-identity": [
        "--uid=65534",
        "--gid=65534",
        "--groups=7,8",
        "--drop-caps=0400",
        "--nnp",
        "--",
        "grep",
        "-E",
        "^(Uid|Gid|Groups|Cap|NoNewPrivs)",
        "/proc/self/status",
    ],
}


# ---- the confinement options: umask, namespaces, Landlock, securebits, seccomp, pid ------------

MACHINE = platform.machine()
# seccomp_data.arch and __NR_ptrace, for the hand-made filter below
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
PTRACE_NR = {"x86_64": 101, "aarch64": 117}
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000


def bpf(code, k, jt=0, jf=0):
    """One struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (native order, 8 bytes)."""
    return struct.pack("=HBBI", code, jt, jf, k)


def deny_ptrace():
    """Everything allowed but ptrace (EPERM); another architecture's calls kill the process."""
    if MACHINE not in AUDIT_ARCH:
        return b""  # the cases that use it are skipped (see needs_filter)
    return b"".join(
        [
            bpf(BPF_LD_W_ABS, 4),  # seccomp_data.arch
            bpf(BPF_JEQ_K, AUDIT_ARCH[MACHINE], 1, 0),
            bpf(BPF_RET_K, RET_KILL_PROCESS),
            bpf(BPF_LD_W_ABS, 0),  # seccomp_data.nr
            bpf(BPF_JEQ_K, PTRACE_NR[MACHINE], 0, 1),
            bpf(BPF_RET_K, RET_ERRNO | errno.EPERM),
            bpf(BPF_RET_K, RET_ALLOW),
        ]
    )


# Landlock rights (linux/landlock.h): EXECUTE 1, WRITE_FILE 2, READ_FILE 4, READ_DIR 8; 0xffff is
# every filesystem right of ABI 5+; net: BIND_TCP 1, CONNECT_TCP 2. {tree} is the module's tree.
LL_ALL = b"fs=ffff\0"
LL_USR = b"path=d:/usr\0"  # rx: the programs, their libraries (/bin, /lib are links into it)
LL_TREE = b"path=c:{tree}/allowed\0"  # ro: a directory
LL_NULL = b"path=ffff:/dev/null\0"  # a character device: the stage keeps the file rights
LANDLOCK_MEMFDS = {
    "ll_dir": LL_ALL + LL_USR + LL_TREE + LL_NULL,
    # every right on a file: the stage keeps the file ones (the kernel refuses the others there)
    "ll_file": LL_ALL + LL_USR + LL_NULL + b"path=ffff:{tree}/other/b\0",
    "ll_missing": LL_ALL + LL_USR + LL_TREE + b"path=c:{tree}/no-such\0",
    "ll_missing_long": LL_ALL + b"path=c:/no-such/" + b"x/" * 2150 + b"\0",  # past PATH_MAX
    "ll_missing_bytes": LL_ALL + LL_USR + b"path=c:/no-such/caf\xc3\xa9-\xff\0",  # not UTF-8
    "ll_ports": b"fs=0\0net=3\0port=1:18080\0port=2:18081\0",
    "ll_ports_unhandled": LL_ALL + LL_USR + b"port=1:18080\0",  # no net=: the ABI-1 attribute
    "ll_rights_unhandled": b"fs=4\0path=4:/usr\0path=8:/etc\0",  # READ_DIR not handled
    "ll_zero_rights": LL_ALL + LL_USR + LL_NULL + b"path=0:/etc\0",
    "ll_upper_hex": b"fs=FFFF\0path=D:/usr\0",
    "ll_leading_zeros": b"fs=000000000000000000000ffff\0" + LL_USR,
    "ll_unknown_right": b"fs=8000000000000000\0" + LL_USR,  # bit 63: no such right
    "ll_nothing_handled": b"fs=0\0",
    "ll_port_edges": b"fs=0\0net=1\0port=1:0\0port=1:65535\0",
    # ABI 6 scopes, with no filesystem right handled: abstract unix sockets 1, signals 2
    "ll_scope_abstract": b"fs=0\0scope=1\0",
    "ll_scope_signal": b"fs=0\0scope=2\0",
    "ll_scope_both": b"fs=0\0scope=3\0",
    "ll_scope_after_net": b"fs=0\0net=3\0scope=3\0port=3:80\0",
    "ll_scope_zero": b"fs=0\0scope=0\0",
    "ll_scope_unknown": b"fs=0\0scope=8000000000000000\0",
    "ll_combined": (
        LL_ALL + b"net=3\0" + LL_USR + b"path=4:/etc/hostname\0port=1:18080\0port=2:18081\0"
    ),
}
# Malformed blobs: each is refused as landlock_fd EINVAL, before any step runs.
LANDLOCK_MALFORMED = {
    "no-fs": LL_USR,
    "net-first": b"net=3\0" + LL_ALL,
    "net-after-path": LL_ALL + LL_USR + b"net=3\0",
    "net-twice": LL_ALL + b"net=1\0net=2\0",
    "fs-twice": LL_ALL + LL_ALL,
    "bad-hex": b"fs=xyz\0",
    "rule-bad-hex": LL_ALL + b"path=g:/usr\0",
    "rule-no-hex": LL_ALL + b"path=:/usr\0",
    "hex-0x": b"fs=0xffff\0",
    "hex-empty": b"fs=\0",
    "hex-65-bits": b"fs=10000000000000000\0",
    "hex-colon": b"fs=1:2\0",
    "hex-non-ascii": b"fs=\xd9\xa1\0",  # an Arabic-Indic one
    "empty-path": LL_ALL + b"path=1:\0",
    "path-no-colon": LL_ALL + b"path=1\0",
    "path-after-port": LL_ALL + b"net=1\0port=1:80\0" + LL_USR,
    "port-too-big": b"fs=1\0net=1\0port=1:65536\0",
    "port-signed": b"fs=1\0net=1\0port=1:-1\0",
    "port-empty": b"fs=1\0net=1\0port=1:\0",
    "port-hex": b"fs=1\0net=1\0port=1:0x50\0",
    "port-no-colon": b"fs=1\0net=1\0port=80\0",
    "unknown-key": LL_ALL + b"mount=1:/\0",
    "no-trailing-nul": b"fs=ffff",
    "last-unterminated": LL_ALL + b"path=d:/usr",
    "double-nul": LL_ALL + b"\0",
    "empty": b"",
    "scope-before-net": b"fs=0\0scope=3\0net=3\0",
    "scope-twice": b"fs=0\0scope=1\0scope=2\0",
    "scope-after-path": LL_ALL + LL_USR + b"scope=3\0",
    "scope-empty": b"fs=0\0scope=\0",
    "scope-bad-hex": b"fs=0\0scope=z\0",
}
LANDLOCK_MEMFDS.update({f"ll_bad_{n.replace('-', '_')}": b for n, b in LANDLOCK_MALFORMED.items()})
SECCOMP_MEMFDS = {
    "sc_ptrace": deny_ptrace(),
    "sc_max": bpf(BPF_RET_K, RET_ALLOW) * 4096,  # BPF_MAXINSNS: the most a filter may have
    "sc_too_long": bpf(BPF_RET_K, RET_ALLOW) * 4097,
    "sc_empty": b"",
    "sc_seven_bytes": b"\x06\0\0\0\0\0\xff",
    "sc_nine_bytes": bpf(BPF_RET_K, RET_ALLOW) + b"\0",
    "sc_no_return": bpf(0x00, 0),  # A = 0, and no return: the kernel refuses it (EINVAL)
}
# PTRACE_PEEKUSER of a pid that does not exist: ESRCH (3) when ptrace runs, EPERM (1) when the
# filter refuses it. c_long/c_void_p: ptrace is variadic in glibc.
PTRACE = [
    "/usr/bin/python3",
    "-I",
    "-c",
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "r = libc.ptrace(ctypes.c_long(3), ctypes.c_long(999999999), None, None)\n"
    "print('ptrace', r, ctypes.get_errno())",
]
ATTEMPT = (
    "import errno, socket\n"
    "keep = []\n"
    "def attempt(what, port):\n"
    "    s = socket.socket()\n"
    "    keep.append(s)\n"
    "    try:\n"
    "        getattr(s, what)(('127.0.0.1', port))\n"
    "        if what == 'bind':\n"
    "            s.listen()\n"
    "        return 'ok'\n"
    "    except OSError as e:\n"
    "        return errno.errorcode[e.errno]\n"
)
# In a new network namespace (lo up), with ll_ports' rules: bind 18080, connect 18081 only.
PORTS = ATTEMPT + (
    "for what, port in (('bind', 18080), ('bind', 18081), ('connect', 18080), "
    "('connect', 18081)):\n"
    "    print(what, port, attempt(what, port))\n"
)
COMBINED = ATTEMPT + (
    "import ctypes, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "print('ids', os.getresuid(), os.getresgid(), os.getgroups())\n"
    "print('umask', oct(os.umask(0)), 'host', socket.gethostname())\n"
    "r = libc.ptrace(ctypes.c_long(3), ctypes.c_long(999999999), None, None)\n"
    "print('ptrace', r, ctypes.get_errno())\n"
    "print('hostname file', open('/etc/hostname').read().strip() != '')\n"
    "try:\n"
    "    open('/etc/passwd')\n"
    "except PermissionError:\n"
    "    print('passwd denied')\n"
    "print('bind 18080', attempt('bind', 18080), 'bind 18081', attempt('bind', 18081))\n"
    "print('connect 18081', attempt('connect', 18081))\n"
    "print('interfaces', sorted(n for _, n in socket.if_nameindex()))\n"
    "print(libc.prctl(39, 0, 0, 0, 0), 'nnp')\n"  # PR_GET_NO_NEW_PRIVS
    "print('securebits', libc.prctl(27, 0, 0, 0, 0))\n"  # PR_GET_SECUREBITS
)
# What a scoped program can reach outside its Landlock domain: this test process by signal,
# its abstract unix socket by connect.
SCOPES = [
    "/usr/bin/python3",
    "-I",
    "-c",
    "import os, socket, sys\n"
    "address = b'\\0' + sys.argv[2].encode()\n"
    "for what, reach in (\n"
    "    ('signal', lambda: os.kill(int(sys.argv[1]), 0)),\n"
    "    ('abstract', lambda: socket.socket(socket.AF_UNIX).connect(address)),\n"
    "):\n"
    "    try:\n"
    "        reach()\n"
    "        print(what, 'reached')\n"
    "    except PermissionError:\n"
    "        print(what, 'refused')\n",
    "{parent}",
    "{abstract}",
]
NOBODY = ["--uid=65534", "--gid=65534", "--clear-groups", "--drop-caps=0000000000000000"]

CONFINE_CASES = {
    # --umask: 1 to 4 octal digits, at most 0777
    "umask": ["--umask=027", "--", "sh", "-c", "umask"],
    "umask-zero": ["--umask=0", "--", "sh", "-c", "umask"],
    "umask-four-digits": ["--umask=0777", "--", "sh", "-c", "umask"],
    "umask-five-digits": ["--umask=00777", "--", "true"],
    "umask-above-777": ["--umask=1000", "--", "true"],
    "umask-not-octal": ["--umask=8", "--", "true"],
    "umask-0o": ["--umask=0o77", "--", "true"],
    "umask-signed": ["--umask=-1", "--", "true"],
    "umask-empty": ["--umask=", "--", "true"],
    "umask-non-ascii-digit": ["--umask=\u0667", "--", "true"],
    "umask-no-value": ["--umask", "--", "true"],
    # --unshare: each namespace, then repeated, unknown and empty items
    "unshare-user": ["--unshare=user", "--", "sh", "-c", "cat /proc/self/uid_map; id -u"],
    "unshare-net": ["--unshare=net", "--", "sh", "-c", "ip -o link | cut -d' ' -f2,3"],
    "unshare-ipc": [
        "--unshare=ipc",
        "--",
        "sh",
        "-c",
        '[ "$(readlink /proc/self/ns/ipc)" != "$(readlink /proc/1/ns/ipc)" ] && echo new ipc',
    ],
    "unshare-uts": ["--unshare=uts", "--hostname=box", "--", "hostname"],
    "unshare-pid": ["--unshare=pid", "--", "sh", "-c", "echo $$ $PPID"],
    "unshare-all": [
        "--unshare=pid,uts,ipc,net,user",
        "--hostname=all",
        "--",
        "sh",
        "-c",
        "echo $$; hostname; ip -o link | cut -d' ' -f2",
    ],
    "unshare-two-options": ["--unshare=net", "--unshare=uts", "--", "true"],
    "unshare-repeated-item": ["--unshare=net,net", "--", "true"],
    "unshare-repeated-option": ["--unshare=net", "--unshare=net", "--", "true"],
    "unshare-unknown": ["--unshare=mnt", "--", "true"],
    "unshare-upper-case": ["--unshare=NET", "--", "true"],
    "unshare-cgroup": ["--unshare=cgroup", "--", "true"],
    "unshare-empty": ["--unshare=", "--", "true"],
    "unshare-empty-item": ["--unshare=net,,uts", "--", "true"],
    "unshare-trailing-comma": ["--unshare=net,", "--", "true"],
    "unshare-leading-comma": ["--unshare=,net", "--", "true"],
    "unshare-not-utf8": [b"--unshare=n\xffet", "--", "true"],
    "unshare-user-then-uid": ["--unshare=user", "--uid=65534", "--", "true"],  # only 0 is mapped
    "unshare-user-locked-root": [
        "--unshare=user",
        "--drop-caps=0000000000000000",
        "--lock-securebits",
        "--",
        "sh",
        "-c",
        "grep -E '^Cap(Prm|Eff)' /proc/self/status; cat /proc/self/uid_map",
    ],
    # --hostname: set in the new uts namespace; without one, refused
    "hostname-64": ["--unshare=uts", "--hostname=" + "h" * 64, "--", "hostname"],
    "hostname-65": ["--unshare=uts", "--hostname=" + "h" * 65, "--", "true"],
    "hostname-empty": ["--unshare=uts", "--hostname=", "--", "cat", "/proc/sys/kernel/hostname"],
    "hostname-no-value": ["--unshare=uts", "--hostname", "--", "true"],
    "hostname-not-utf8": [
        b"--unshare=uts",
        b"--hostname=caf\xc3\xa9\xff",
        "--",
        "cat",
        "/proc/sys/kernel/hostname",
    ],
    "hostname-without-unshare": ["--hostname=ignored", "--", "cat", "/proc/sys/kernel/hostname"],
    "hostname-without-uts": ["--unshare=net", "--hostname=renamed", "--", "hostname"],
    # --landlock-fd: good blobs
    "landlock-dir": [
        "--landlock-fd={ll_dir}",
        "--nnp",
        "--",
        "sh",
        "-c",
        "cat {tree}/allowed/a; ls {tree}/allowed; cat {tree}/other/b 2>/dev/null || echo no b; "
        "touch {tree}/allowed/new 2>/dev/null || echo no write; ls / >/dev/null 2>&1 || echo no /",
    ],
    "landlock-file": [
        "--landlock-fd={ll_file}",
        "--nnp",
        "--",
        "sh",
        "-c",
        "cat {tree}/other/b; ls {tree}/other >/dev/null 2>&1 || echo no listing; "
        "cat {tree}/allowed/a 2>/dev/null || echo no a",
    ],
    "landlock-missing-path": ["--landlock-fd={ll_missing}", "--nnp", "--", "true"],
    "landlock-missing-long-path": ["--landlock-fd={ll_missing_long}", "--nnp", "--", "true"],
    "landlock-missing-non-utf8-path": ["--landlock-fd={ll_missing_bytes}", "--nnp", "--", "true"],
    "landlock-ports": [
        "--landlock-fd={ll_ports}",
        "--unshare=net",
        "--nnp",
        "--",
        "/usr/bin/python3",
        "-I",
        "-c",
        PORTS,
    ],
    "landlock-ports-unhandled": ["--landlock-fd={ll_ports_unhandled}", "--nnp", "--", "true"],
    "landlock-rights-unhandled": [
        "--landlock-fd={ll_rights_unhandled}",
        "--nnp",
        "--",
        "sh",
        "-c",
        "ls /etc >/dev/null && echo listed; cat /etc/hostname >/dev/null 2>&1 || echo no read",
    ],
    "landlock-zero-rights": [
        "--landlock-fd={ll_zero_rights}",
        "--nnp",
        "--",
        "sh",
        "-c",
        "ls /etc >/dev/null 2>&1 || echo no listing",
    ],
    "landlock-upper-hex": ["--landlock-fd={ll_upper_hex}", "--nnp", "--", "echo", "ran"],
    "landlock-leading-zeros": ["--landlock-fd={ll_leading_zeros}", "--nnp", "--", "echo", "ran"],
    "landlock-port-edges": ["--landlock-fd={ll_port_edges}", "--nnp", "--", "echo", "ran"],
    "landlock-unknown-right": ["--landlock-fd={ll_unknown_right}", "--nnp", "--", "true"],
    "landlock-nothing-handled": ["--landlock-fd={ll_nothing_handled}", "--nnp", "--", "true"],
    "landlock-as-root-without-nnp": ["--landlock-fd={ll_dir}", "--", "cat", "{tree}/allowed/a"],
    "landlock-nobody-without-nnp": ["--landlock-fd={ll_dir}", *NOBODY, "--", "true"],
    "landlock-unscoped": ["--nnp", "--", *SCOPES],
    "landlock-scope-abstract": ["--landlock-fd={ll_scope_abstract}", "--nnp", "--", *SCOPES],
    "landlock-scope-signal": ["--landlock-fd={ll_scope_signal}", "--nnp", "--", *SCOPES],
    "landlock-scope-both": ["--landlock-fd={ll_scope_both}", "--nnp", "--", *SCOPES],
    "landlock-scope-after-net": ["--landlock-fd={ll_scope_after_net}", "--nnp", "--", *SCOPES],
    "landlock-scope-zero": ["--landlock-fd={ll_scope_zero}", "--nnp", "--", "true"],
    "landlock-scope-unknown": ["--landlock-fd={ll_scope_unknown}", "--nnp", "--", "true"],
    # within the domain a signal still works: the program ends itself, the relay passes it on
    "pid-scoped-signal": [
        "--unshare=pid",
        "--landlock-fd={ll_scope_both}",
        "--nnp",
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ],
    "landlock-fd-closed": ["--landlock-fd=99", "--", "true"],
    "landlock-fd-not-a-number": ["--landlock-fd=x", "--", "true"],
    "landlock-fd-is-a-pipe": ["--landlock-fd={pipe}", "--", "true"],
    "one-memfd-twice": ["--landlock-fd={ll_dir}", "--seccomp-fd={ll_dir}", "--", "true"],
    # --lock-securebits: a uid-0 program keeps nothing at exec, and cannot undo it
    "securebits": [
        "--drop-caps=0000000000000000",
        "--lock-securebits",
        "--",
        "sh",
        "-c",
        "capsh --print | grep -A2 '^Securebits'; grep -E '^Cap(Prm|Eff)' /proc/self/status",
    ],
    "securebits-root-keeps-nothing": [
        "--lock-securebits",
        "--",
        "grep",
        "-E",
        "^Cap(Prm|Eff|Bnd)",
        "/proc/self/status",
    ],
    "securebits-with-value": ["--lock-securebits=1", "--", "true"],
    "securebits-after-uid": ["--uid=65534", "--lock-securebits", "--", "echo", "ran"],
    "securebits-after-uid-strict": ["--uid=65534", "--lock-securebits", "--strict", "--", "true"],
    # --seccomp-fd, --seccomp-notify-fd
    "seccomp-ptrace": ["--seccomp-fd={sc_ptrace}", "--nnp", "--", *PTRACE],
    "seccomp-unfiltered": ["--nnp", "--", *PTRACE],
    "seccomp-as-root-without-nnp": ["--seccomp-fd={sc_ptrace}", "--", *PTRACE],
    "seccomp-nobody-without-nnp": ["--seccomp-fd={sc_ptrace}", *NOBODY, "--", "true"],
    "seccomp-4096-instructions": ["--seccomp-fd={sc_max}", "--nnp", "--", "echo", "ran"],
    "seccomp-4097-instructions": ["--seccomp-fd={sc_too_long}", "--", "true"],
    "seccomp-empty": ["--seccomp-fd={sc_empty}", "--", "true"],
    "seccomp-seven-bytes": ["--seccomp-fd={sc_seven_bytes}", "--", "true"],
    "seccomp-nine-bytes": ["--seccomp-fd={sc_nine_bytes}", "--", "true"],
    "seccomp-no-return": ["--seccomp-fd={sc_no_return}", "--nnp", "--", "true"],
    "seccomp-fd-closed": ["--seccomp-fd=99", "--", "true"],
    "seccomp-fd-is-a-pipe": ["--seccomp-fd={pipe}", "--", "true"],
    "notify-without-filter": ["--seccomp-notify-fd={pipe}", "--", "true"],
    "notify-option-first": [
        "--seccomp-notify-fd={pipe}",
        "--seccomp-fd={sc_ptrace}",
        "--nnp",
        "--",
        "true",
    ],
    "notify-over-a-pipe": [
        "--seccomp-fd={sc_ptrace}",
        "--seccomp-notify-fd={pipe}",
        "--nnp",
        "--",
        "true",
    ],
    "notify-fd-closed": ["--seccomp-fd={sc_ptrace}", "--seccomp-notify-fd=98", "--", "true"],
    "notify-fd-not-a-number": ["--seccomp-fd={sc_ptrace}", "--seccomp-notify-fd=", "--", "true"],
    # --unshare=pid: the relay passes the program's status and its death by signal through
    "pid-exit-status": ["--unshare=pid", "--", "sh", "-c", "sleep 100 & exit 3"],
    "pid-leftover-session": ["--unshare=pid", "--", "sh", "-c", "setsid sleep 100 & echo $$"],
    "pid-signal": ["--unshare=pid", "--", "sh", "-c", "kill -TERM $$"],
    "pid-sigkill": ["--unshare=pid", "--", "sh", "-c", "kill -KILL $$"],
    "pid-die-with-parent": [
        "--unshare=pid",
        "--die-with-parent={parent}",
        "--",
        "sh",
        "-c",
        "echo $PPID",
    ],
    "pid-die-with-parent-gone": ["--unshare=pid", "--die-with-parent=1", "--", "true"],
    "pid-not-found": ["--unshare=pid", "--", "no-such-program-x"],
    "pid-fails-in-the-program": [
        "--unshare=pid",
        "--seccomp-fd={sc_ptrace}",
        *NOBODY,
        "--",
        "true",
    ],
    "pid-landlock-seccomp": [
        "--unshare=pid",
        "--landlock-fd={ll_dir}",
        "--seccomp-fd={sc_ptrace}",
        "--nnp",
        "--",
        *PTRACE,
    ],
    # all of it at once
    "combined-as-nobody": [
        "--umask=077",
        "--unshare=net,uts,ipc,pid",
        "--hostname=box",
        "--landlock-fd={ll_combined}",
        *NOBODY,
        "--nnp",
        "--seccomp-fd={sc_ptrace}",
        "--",
        "/usr/bin/python3",
        "-I",
        "-c",
        COMBINED,
    ],
    "combined-as-locked-root": [
        "--rlimit=7:64",
        "--umask=0",
        "--unshare=user,net,uts,ipc,pid",
        "--hostname=box",
        "--landlock-fd={ll_combined}",
        "--drop-caps=0000000000000000",
        "--lock-securebits",
        "--nnp",
        "--ignore-signals=13",
        "--die-with-parent={parent}",
        "--seccomp-fd={sc_ptrace}",
        "--",
        "/usr/bin/python3",
        "-I",
        "-c",
        COMBINED,
    ],
}
CASES.update(CONFINE_CASES)
# --trace-exec (verify) under a tracer: test_native_and_twin_agree_under_their_tracer below.
CASES["trace-exec-with-pid-ns"] = ["--trace-exec", "--unshare=pid", "--", "echo", "ran"]
# A tracer named that is not our parent (the launcher died, init inherited the stage): refuse,
# never make init the tracer and stop for good.
CASES["trace-exec-tracer-gone"] = ["--trace-exec=1", "--", "echo", "ran"]
CASES["trace-exec-zero"] = ["--trace-exec=0", "--", "true"]

# What the native stage's run without a report pipe must give: (status, stdout, stderr); the
# twin's is the same by parity.
with open("/proc/self/status", "rb") as _status:
    _OWN_STATUS = _status.read().splitlines()
ARGUMENTS = b"hardexec: arguments failed: [Errno 22] Invalid argument\n"
LANDLOCK_FD = b"hardexec: landlock_fd failed: [Errno 22] Invalid argument\n"
SECCOMP_FD = b"hardexec: seccomp_fd failed: [Errno 22] Invalid argument\n"
EXPECT = {
    "umask": (0, b"0027\n", b""),
    "umask-zero": (0, b"0000\n", b""),
    "umask-four-digits": (0, b"0777\n", b""),
    "unshare-user": (0, b"         0          0          1\n0\n", b""),
    "unshare-net": (0, b"lo: <LOOPBACK,UP,LOWER_UP>\n", b""),
    "unshare-ipc": (0, b"new ipc\n", b""),
    "unshare-uts": (0, b"box\n", b""),
    "unshare-pid": (0, b"2 0\n", b""),
    "unshare-all": (0, b"2\nall\nlo:\n", b""),
    "unshare-two-options": (0, b"", b""),
    "unshare-user-then-uid": (
        125,
        b"",
        b"hardexec: setresuid failed: [Errno 22] Invalid argument\n",
    ),
    "unshare-user-locked-root": (
        0,
        b"CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n         0          0          1\n",
        b"",
    ),
    "hostname-not-utf8": (0, b"caf\xc3\xa9\xff\n", b""),
    "one-memfd-twice": (125, b"", b"hardexec: seccomp_fd failed: [Errno 9] Bad file descriptor\n"),
    # a pipe cannot be sized (lseek: ESPIPE); stage.c has no text for it, nor has the twin
    "landlock-fd-is-a-pipe": (
        125,
        b"",
        b"hardexec: landlock_fd failed: [Errno 29] Unknown error 29\n",
    ),
    "seccomp-fd-is-a-pipe": (
        125,
        b"",
        b"hardexec: seccomp_fd failed: [Errno 29] Unknown error 29\n",
    ),
    # without a new uts namespace it would rename the caller's host: a bad argument
    "hostname-without-unshare": (
        125,
        b"",
        b"hardexec: arguments failed: [Errno 22] Invalid argument\n",
    ),
    "hostname-without-uts": (
        125,
        b"",
        b"hardexec: arguments failed: [Errno 22] Invalid argument\n",
    ),
    "hostname-64": (0, b"h" * 64 + b"\n", b""),
    "hostname-65": (125, b"", b"hardexec: hostname failed: [Errno 22] Invalid argument\n"),
    "hostname-empty": (0, b"\n", b""),
    "landlock-dir": (0, b"A\na\nno b\nno write\nno /\n", b""),
    "landlock-file": (0, b"B\nno listing\nno a\n", b""),
    "landlock-missing-path": (
        125,
        b"",
        b"hardexec: landlock_path failed: [Errno 2] No such file or directory (rule 2): "
        b"{tree}/no-such\n",
    ),
    # the line is cut at stage.c's buffer (PATH_MAX + 256 bytes), still one line
    "landlock-missing-long-path": (
        125,
        b"",
        (
            b"hardexec: landlock_path failed: [Errno 36] File name too long (rule 0): /no-such/"
            + b"x/" * 2150
        )[:4351]
        + b"\n",
    ),
    "landlock-missing-non-utf8-path": (
        125,
        b"",
        b"hardexec: landlock_path failed: [Errno 2] No such file or directory (rule 1): "
        b"/no-such/caf\xc3\xa9-\xff\n",
    ),
    "landlock-ports": (
        0,
        b"bind 18080 ok\nbind 18081 EACCES\nconnect 18080 EACCES\nconnect 18081 ECONNREFUSED\n",
        b"",
    ),
    "landlock-ports-unhandled": (0, b"", b""),
    "landlock-rights-unhandled": (0, b"listed\nno read\n", b""),
    "landlock-zero-rights": (0, b"no listing\n", b""),
    "landlock-upper-hex": (0, b"ran\n", b""),
    "landlock-leading-zeros": (0, b"ran\n", b""),
    "landlock-port-edges": (0, b"ran\n", b""),
    "landlock-unknown-right": (
        125,
        b"",
        b"hardexec: landlock failed: [Errno 22] Invalid argument\n",
    ),
    "landlock-nothing-handled": (
        125,
        b"",
        b"hardexec: landlock failed: [Errno 42] No message of desired type\n",
    ),
    "landlock-as-root-without-nnp": (0, b"A\n", b""),
    "landlock-unscoped": (0, b"signal reached\nabstract reached\n", b""),
    "landlock-scope-abstract": (0, b"signal reached\nabstract refused\n", b""),
    "landlock-scope-signal": (0, b"signal refused\nabstract reached\n", b""),
    "landlock-scope-both": (0, b"signal refused\nabstract refused\n", b""),
    "landlock-scope-after-net": (0, b"signal refused\nabstract refused\n", b""),
    "landlock-scope-zero": (
        125,
        b"",
        b"hardexec: landlock failed: [Errno 42] No message of desired type\n",
    ),
    "landlock-scope-unknown": (
        125,
        b"",
        b"hardexec: landlock failed: [Errno 22] Invalid argument\n",
    ),
    "pid-scoped-signal": (-signal.SIGTERM, b"", b""),
    "landlock-nobody-without-nnp": (
        125,
        b"",
        b"hardexec: landlock failed: [Errno 1] Operation not permitted\n",
    ),
    "landlock-fd-closed": (
        125,
        b"",
        b"hardexec: landlock_fd failed: [Errno 9] Bad file descriptor\n",
    ),
    "securebits": (
        0,
        b"Securebits: 013/0xb/4'b1011 (no-new-privs=0)\n"
        b" secure-noroot: yes (locked)\n"
        b" secure-no-suid-fixup: no (locked)\n"
        b"CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n",
        b"",
    ),
    # no capability drop: root keeps the bounding set, but NOROOT gives it nothing at exec
    "securebits-root-keeps-nothing": (
        0,
        b"CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
        + next(line for line in _OWN_STATUS if line.startswith(b"CapBnd:"))
        + b"\n",
        b"",
    ),
    "securebits-after-uid": (
        0,
        b"ran\n",
        b"hardexec: warning: securebits failed: [Errno 1] Operation not permitted: the launcher "
        b"lacks CAP_SETPCAP\n",
    ),
    "securebits-after-uid-strict": (
        125,
        b"",
        b"hardexec: securebits failed: [Errno 1] Operation not permitted: the launcher lacks "
        b"CAP_SETPCAP\n",
    ),
    "seccomp-ptrace": (0, b"ptrace -1 1\n", b""),
    "seccomp-unfiltered": (0, b"ptrace -1 3\n", b""),
    "seccomp-as-root-without-nnp": (0, b"ptrace -1 1\n", b""),
    "seccomp-nobody-without-nnp": (
        125,
        b"",
        b"hardexec: seccomp failed: [Errno 13] Permission denied\n",
    ),
    "seccomp-4096-instructions": (0, b"ran\n", b""),
    "seccomp-no-return": (125, b"", b"hardexec: seccomp failed: [Errno 22] Invalid argument\n"),
    "seccomp-fd-closed": (
        125,
        b"",
        b"hardexec: seccomp_fd failed: [Errno 9] Bad file descriptor\n",
    ),
    "notify-without-filter": (125, b"", ARGUMENTS),
    "notify-option-first": (
        125,
        b"",
        b"hardexec: seccomp_notify failed: [Errno 88] Unknown error 88\n",
    ),
    "notify-over-a-pipe": (
        125,
        b"",
        b"hardexec: seccomp_notify failed: [Errno 88] Unknown error 88\n",
    ),
    "notify-fd-closed": (
        125,
        b"",
        b"hardexec: seccomp_notify failed: [Errno 9] Bad file descriptor\n",
    ),
    "notify-fd-not-a-number": (125, b"", ARGUMENTS),
    "pid-exit-status": (3, b"", b""),
    "pid-leftover-session": (0, b"2\n", b""),
    "pid-signal": (-signal.SIGTERM, b"", b""),
    "pid-sigkill": (-signal.SIGKILL, b"", b""),
    "pid-die-with-parent": (0, b"0\n", b""),
    "pid-die-with-parent-gone": (
        125,
        b"",
        b"hardexec: die_with_parent failed: [Errno 3] No such process: the parent has already "
        b"exited\n",
    ),
    "pid-not-found": (127, b"", b"hardexec: no-such-program-x: No such file or directory\n"),
    "pid-fails-in-the-program": (
        125,
        b"",
        b"hardexec: seccomp failed: [Errno 13] Permission denied\n",
    ),
    "pid-landlock-seccomp": (0, b"ptrace -1 1\n", b""),
    "combined-as-nobody": (
        0,
        b"ids (65534, 65534, 65534) (65534, 65534, 65534) []\n"
        b"umask 0o77 host box\n"
        b"ptrace -1 1\n"
        b"hostname file True\n"
        b"passwd denied\n"
        b"bind 18080 ok bind 18081 EACCES\n"
        b"connect 18081 ECONNREFUSED\n"
        b"interfaces ['lo']\n"
        b"1 nnp\n"
        b"securebits 0\n",
        b"",
    ),
}
for _name in (
    "umask-five-digits", "umask-above-777", "umask-not-octal", "umask-0o", "umask-signed",
    "umask-empty", "umask-no-value", "umask-non-ascii-digit", "unshare-not-utf8",
    "unshare-repeated-item", "unshare-repeated-option",
    "unshare-unknown", "unshare-upper-case", "unshare-cgroup", "unshare-empty",
    "unshare-empty-item", "unshare-trailing-comma", "unshare-leading-comma", "hostname-no-value",
    "landlock-fd-not-a-number", "securebits-with-value",
):  # fmt: skip
    EXPECT[_name] = (125, b"", ARGUMENTS)
for _name in LANDLOCK_MALFORMED:
    CASES[f"landlock-malformed-{_name}"] = [
        f"--landlock-fd={{ll_bad_{_name.replace('-', '_')}}}",
        "--nnp",
        "--",
        "echo",
        "ran",
    ]
    EXPECT[f"landlock-malformed-{_name}"] = (125, b"", LANDLOCK_FD)
for _name in ("4097-instructions", "empty", "seven-bytes", "nine-bytes"):
    EXPECT[f"seccomp-{_name}"] = (125, b"", SECCOMP_FD)
# the combined root case: the same program, as uid 0 with nothing and securebits locked
EXPECT["trace-exec-with-pid-ns"] = (125, b"", ARGUMENTS)  # the relay would be the tracer
EXPECT["trace-exec-tracer-gone"] = (
    125,
    b"",
    b"hardexec: trace failed: [Errno 3] No such process: the launcher has already exited\n",
)
EXPECT["trace-exec-zero"] = (125, b"", ARGUMENTS)
EXPECT["combined-as-locked-root"] = (
    0,
    EXPECT["combined-as-nobody"][1]
    .replace(b"(65534, 65534, 65534) (65534, 65534, 65534) []", b"(0, 0, 0) (0, 0, 0) []")
    .replace(b"0o77", b"0o0")
    .replace(b"securebits 0", b"securebits 11"),
    b"",
)
# the report pipe's records, where they say more than the exit status
RECORDS = {
    "landlock-missing-path": b"F landlock_path 2 2\n",
    "hostname-65": b"F hostname 22 -\n",
    "securebits-after-uid": b"W securebits 1 -\n",
    "notify-over-a-pipe": b"F seccomp_notify 88 -\n",
    "pid-fails-in-the-program": b"F seccomp 13 -\n",
    "landlock-malformed-empty": b"F landlock_fd 22 -\n",
    "pid-not-found": b"F exec 2 -\n",
    "seccomp-empty": b"F seccomp_fd 22 -\n",
}


# memfd contents the cases refer to as {name}; {tree} in them is the tree fixture's path
MEMFDS = {
    "groups": array.array("I", [7, 8]).tobytes(),
    "odd": b"\x01\x02\x03",
    "minus_one": array.array("I", [5, 0xFFFFFFFF]).tobytes(),
    "env": b"A=1\0PATH=/usr/bin:/bin\0B=two words\0",
    "empty": b"",
    **LANDLOCK_MEMFDS,
    **SECCOMP_MEMFDS,
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A directory a Landlock rule allows, and one it does not."""
    root = tmp_path_factory.mktemp("landlock")
    (root / "allowed").mkdir()
    (root / "allowed" / "a").write_text("A\n")
    (root / "other").mkdir()
    (root / "other" / "b").write_text("B\n")
    return str(root)


@contextlib.contextmanager
def memfds(tree="/nonexistent"):
    """Every memfd of MEMFDS, and a pipe's read end as {pipe}."""
    fds = {}
    try:
        for name, data in MEMFDS.items():
            fds[name] = os.memfd_create(name, 0)
            os.write(fds[name], data.replace(b"{tree}", os.fsencode(tree)))
        fds["pipe"], fds["pipe_w"] = os.pipe()
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def wrapper(args):
    """``unshare --uts`` for a case that may set a host name: never this host's."""
    prefixes = ("--hostname", "--unshare")
    touches = any(os.fsencode(a).startswith(tuple(map(os.fsencode, prefixes))) for a in args)
    return ["unshare", "--uts"] if touches else []


@contextlib.contextmanager
def abstract_listener():
    """A unix socket listening on an abstract name (for Landlock's scope), and that name."""
    name = f"hardexec-parity-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(b"\0" + name.encode())
        server.listen()
        yield name


def run_stage(command, args, with_report, tree="/nonexistent"):
    with memfds(tree) as fds, abstract_listener() as abstract:
        args = [  # a bytes argument is passed as it is (not UTF-8, say)
            arg.format(parent=os.getpid(), tree=tree, abstract=abstract, **fds)
            if isinstance(arg, str)
            else arg
            for arg in args
        ]
        return _run_stage([*wrapper(args), *command], args, with_report, tuple(fds.values()))


def _run_stage(command, args, with_report, pass_fds):
    if not with_report:
        result = subprocess.run(
            [*command, *args], capture_output=True, pass_fds=pass_fds, timeout=60
        )
        return result.returncode, result.stdout, result.stderr, b""
    read_end, write_end = os.pipe()
    try:
        fd_args = [f"--report-fd={write_end}", *args]
        with subprocess.Popen(
            [*command, *fd_args],
            pass_fds=[write_end, *pass_fds],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            os.close(write_end)
            write_end = -1
            try:
                with os.fdopen(read_end, "rb") as report:
                    read_end = -1
                    records = report.read()
                out, err = proc.communicate(timeout=60)
            except BaseException:
                proc.kill()
                raise
        return proc.returncode, out, err, records
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def needs_filter(args):
    if any(b"{sc_ptrace}" in os.fsencode(arg) for arg in args) and MACHINE not in AUDIT_ARCH:
        pytest.skip(f"the hand-made seccomp filter knows x86_64 and aarch64, not {MACHINE}")


@pytest.mark.parametrize("with_report", [False, True], ids=["stderr", "report-pipe"])
@pytest.mark.parametrize("name", list(CASES))
def test_native_and_twin_agree(native, name, with_report, tree):
    args = CASES[name]
    needs_filter(args)
    ours = run_stage(native, args, with_report, tree)
    assert ours == run_stage(TWIN, args, with_report, tree)
    status, out, err = EXPECT.get(name, (None, None, None))
    if err is not None:
        err = err.replace(b"{tree}", os.fsencode(tree))
    if status is None:
        assert ours[0] in (0, 125, 126, 127)
    elif not with_report:
        assert ours[:3] == (status, out, err)
    else:  # the same program's output; the stage's own words are records now
        assert ours[:3] == (status, out, b"")
        if name in RECORDS:
            assert ours[3] == RECORDS[name]
        elif status in (125, 126, 127):
            assert ours[3].startswith(b"F ") and ours[3].count(b"\n") == 1, ours[3]
        else:
            assert ours[3] == b""


def _listener_run(command, tree):
    """The stage with a filter and a notify socket: what it did, and what came over the socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    filt = os.memfd_create("filter", 0)
    try:
        os.write(filt, deny_ptrace())
        args = [f"--seccomp-fd={filt}", f"--seccomp-notify-fd={theirs.fileno()}", "--nnp", "--"]
        args += ["sh", "-c", "ls /proc/self/fd; exec " + shlex.join(PTRACE)]
        result = _run_stage(command, args, False, (filt, theirs.fileno()))
        theirs.close()
        data, fds, _, _ = socket.recv_fds(ours, 16, 4, socket.MSG_DONTWAIT)
        kinds = []
        for fd in fds:
            kinds.append(os.readlink(f"/proc/self/fd/{fd}"))
            os.close(fd)
        return (*result, data, kinds, theirs.fileno())
    finally:
        os.close(filt)
        ours.close()
        theirs.close()


def test_the_listener_is_sent_over_the_notify_socket(native, tree):
    """One data byte L and one fd, the filter's listener; the program inherits none of it."""
    needs_filter(["{sc_ptrace}"])
    ours = _listener_run(native, tree)
    twin = _listener_run(TWIN, tree)
    status, out, err, _, data, kinds, socket_fd = ours
    assert ours[:6] == twin[:6]
    assert (status, err, data, kinds) == (0, b"", b"L", ["anon_inode:seccomp notify"])
    listed, ptrace = out.decode().rsplit("\n", 2)[:2]
    assert str(socket_fd) not in listed.split()  # close-on-exec: the program has no socket
    assert ptrace == "ptrace -1 1"


@contextlib.contextmanager
def _not_ignored(sig):
    """``sig`` at its default while the stage starts: a signal this process ignores (a suite
    run under nohup ignores SIGHUP) is ignored by its children too, and never delivered."""
    if sig == signal.SIGKILL or signal.getsignal(sig) != signal.SIG_IGN:
        yield
        return
    signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(sig, signal.SIG_IGN)


def _relay_run(command, sig):
    """The stage in a pid namespace, its relay sent ``sig`` once the program runs."""
    trap = f"trap 'echo got {sig}; exit 7' {sig}; echo ready; while :; do sleep 0.1; done"
    script = "echo ready; exec sleep 100" if sig == signal.SIGKILL else trap
    with (
        _not_ignored(sig),
        subprocess.Popen(
            [*command, "--unshare=pid", "--", "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc,
    ):
        try:
            assert proc.stdout.readline() == b"ready\n"
            proc.send_signal(sig)
            started = time.monotonic()
            out, err = proc.communicate(timeout=30)  # EOF: every process of the tree is gone
        except BaseException:
            proc.kill()
            raise
        return proc.returncode, out, err, time.monotonic() - started < 10


FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGTERM, signal.SIGRTMIN)


@pytest.mark.parametrize("sig", [*FORWARDED, signal.SIGKILL], ids=lambda s: f"signal-{int(s)}")
def test_the_pid_relay_forwards_signals_and_takes_the_namespace_with_it(native, sig):
    """A signal to the relay reaches the program (which traps it and exits 7); SIGKILL of the
    relay ends the namespace's init, and with it the program: its stdout reaches EOF."""
    ours = _relay_run(native, sig)
    assert ours == _relay_run(TWIN, sig)
    if sig == signal.SIGKILL:
        assert ours == (-signal.SIGKILL, b"", b"", True)
    else:
        assert ours == (7, f"got {int(sig)}\n".encode(), b"", True)


HOSTNAME_PROBE = 'hostname before && "$@"; echo status $?; hostname'


def _traced_run(command, args, detach):
    """The stage with ``--trace-exec`` under this process, its tracer: followed to the
    program's exec stop (where the program's own CapEff is read) and released; or, with
    ``detach``, detached at the stage's own stop, as if the tracer had gone before setting
    PTRACE_O_EXITKILL. Nothing waits for it (a poll would take a ptrace stop) until then."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [*command, f"--report-fd={write_end}", "--trace-exec", *args],
            pass_fds=[write_end],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        write_end = -1
        tracee, seen = verify.Tracee(proc.pid), None
        try:
            if detach:
                flags = os.WSTOPPED | os.WNOWAIT | 0x40000000  # __WALL
                assert os.waitid(os.P_PID, proc.pid, flags).si_status == signal.SIGSTOP
                assert verify._ptrace(verify.PTRACE_DETACH, proc.pid, 0) == 0
            else:
                assert tracee.follow() and tracee.ready and tracee.at_exec
                seen = tracee.status()["CapEff"]
                tracee.release()
            with os.fdopen(read_end, "rb") as report:
                read_end = -1
                records = report.read()
            out, err = proc.communicate(timeout=60)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
            proc.stderr.close()
        return proc.returncode, out, err, records, seen
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


TRACED = ["--drop-caps=0000000000000400", "--nnp", "--", "sh", "-c", "echo ran"]


def test_native_and_twin_agree_under_their_tracer(native):
    """The T record, the stop, the exec stop with the plan applied, then the program runs."""
    ours = _traced_run(native, TRACED, detach=False)
    assert ours == _traced_run(TWIN, TRACED, detach=False)
    assert ours == (0, b"ran\n", b"", b"T trace 0 -\n", "0000000000000400")


def test_a_stage_continued_without_its_tracer_never_runs_the_program(native):
    ours = _traced_run(native, TRACED, detach=True)
    assert ours == _traced_run(TWIN, TRACED, detach=True)
    assert ours == (125, b"", b"", b"T trace 0 -\nF trace 3 -\n", None)


RENAME = ["--unshare=net", "--hostname=renamed", "--", "true"]


def test_hostname_is_never_set_outside_a_new_uts_namespace(native):
    for command in (native, TWIN):
        done = subprocess.run(
            ["unshare", "--uts", "sh", "-c", HOSTNAME_PROBE, "sh", *command, *RENAME],
            capture_output=True,
            timeout=60,
        )
        # refused as a bad argument, and the caller's host name stays
        assert done.stdout == b"status 125\nbefore\n", done


def test_native_and_twin_agree_when_root_would_regain_everything(native):
    """Under setpriv without CAP_SETPCAP, a uid-0 program is refused by both, in the same words."""
    args = ["setpriv", "--bounding-set=-setpcap"]
    case = ["--drop-caps=0400", "--", "true"]
    for with_report in (False, True):
        ours = run_stage([*args, *native], case, with_report)
        assert ours == run_stage([*args, *TWIN], case, with_report)
        assert ours[0] == 125
    stderr = run_stage([*args, *native], case, False)[2].decode()
    assert stderr == (
        "hardexec: bounding_set failed: [Errno 1] Operation not permitted (capability 0): "
        "no CAP_SETPCAP: root would regain every capability at exec\n"
    )


def setup_variants() -> dict[str, tuple[list[str], list[str]]]:
    """The build variants setup.py tries, read from its source (importing it would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "VARIANTS":
            names = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)}
            variants = {}
            for item in node.value.elts:
                name, cflags, ldflags = item.elts
                if isinstance(cflags, ast.Name):
                    cflags = names[cflags.id]
                variants[ast.literal_eval(name)] = (
                    ast.literal_eval(cflags),
                    ast.literal_eval(ldflags),
                )
            return variants
    raise AssertionError("setup.py has no VARIANTS")


@pytest.mark.parametrize("variant", ["freestanding", "libc-static"])
def test_every_build_variant_compiles_warning_free_and_runs(variant, tmp_path):
    """setup.py cannot build with -Werror (other compilers); here, with gcc, we can."""
    cflags, ldflags = setup_variants()[variant]
    out = tmp_path / "stage"
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", *cflags, "-o", str(out), str(SOURCE)]
    subprocess.run([*cmd, *ldflags], check=True)
    result = subprocess.run([str(out), "--drop-caps=400", "--nnp", "--", "true"])
    assert result.returncode == 0
