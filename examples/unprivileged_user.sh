# As an unprivileged user that keeps exactly one capability: uid and gid 65534, and
# NET_BIND_SERVICE (0000000000000400) in every capability set, ambient included.
hardexec run --user nobody --group nogroup --drop-all-caps --keep-cap net_bind_service -- \
    grep -E '^(Uid|Gid|Cap)' /proc/self/status
