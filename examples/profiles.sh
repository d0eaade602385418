# Built-in profiles: strict (no capabilities, no_new_privs, no core dumps, environment cleared but
# PATH, the default syscall deny-list, no network), service (strict, but keeping
# NET_BIND_SERVICE and the host's network) and none. Options and --policy files go on top.
hardexec run --profile strict -- sh -c 'grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; tail -n +3 /proc/net/dev | cut -d: -f1'
hardexec run --profile strict -- unshare --user true || echo "unshare was denied (exit $?)"
hardexec run --profile service --user nobody -- python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 80))
print("nobody bound port", s.getsockname()[1])'
