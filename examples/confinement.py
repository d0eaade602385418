"""Confinement from Python: files, TCP ports and syscalls, and what was denied."""

import hardexec
from hardexec import Confinement, Policy, SecurityConfig, SyscallFilter

policy = Policy(
    security=SecurityConfig(drop_all_caps=True, no_new_privs=True),
    confinement=Confinement(
        fs=[("/usr", "rx"), ("/etc/ld.so.cache", "ro")],  # and the program's own libraries
        tcp_connect=[443],  # the only port it may connect to
        syscalls=SyscallFilter(default=True, deny=["ptrace:kill"]),  # a kill rule on top
        namespaces=["pid"],
    ),
)
probe = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("unshare:", libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))
print("read /etc/hostname:", end=" ")
try:
    open("/etc/hostname").read()
except PermissionError as err:
    print(err.strerror)
print("now ptrace, under a kill rule", flush=True)
libc.ptrace(0, 0, 0, 0)
print("never printed")
"""
done = hardexec.run(["/usr/bin/python3", "-S", "-c", probe], policy=policy, capture_output=True)
print(done.stdout.decode(), end="")
print("exit:", done.returncode)  # -9: SIGKILL, by the kill rule
print("denied:", dict(sorted(done.denied_syscalls.items())))
