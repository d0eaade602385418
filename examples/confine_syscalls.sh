# seccomp: hardexec's default deny-list refuses what container runtimes refuse (namespaces,
# ptrace, mount, kernel modules, ...) with EPERM, and says which syscalls were denied.
hardexec run --syscalls default -- unshare --user true || echo "unshare was refused (exit $?)"
# An allow-list: only file and process basics (and @default, which every program needs); the
# rest gets ENOSYS. Here the program's socket() is refused. (sendmsg in the list lets hardexec
# count what is refused: the stage hands its listener over with one.)
hardexec run --syscalls-allow @basic-io,@file-system,@process,@signal,@io-event,sendmsg -- \
    /usr/bin/python3 -S -c 'import socket; socket.socket()' || echo "socket() was refused"
