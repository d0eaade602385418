# A cgroup v2 group of its own for the program and everything it starts, removed afterwards;
# --usage prints what the group used, on stderr.
hardexec run --cgroup --usage -- grep '^0::' /proc/self/cgroup
