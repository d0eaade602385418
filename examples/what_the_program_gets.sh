# What a program receives under "drop all capabilities, keep NET_BIND_SERVICE, no privilege gain":
# the same single capability (0000000000000400) in all five sets, and NoNewPrivs 1.
hardexec run --drop-all-caps --keep-cap NET_BIND_SERVICE --no-new-privs -- \
    grep -E '^(Cap|NoNewPrivs)' /proc/self/status
