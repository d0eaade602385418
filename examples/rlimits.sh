# Resource limits become hard ceilings the program cannot raise: soft = hard.
hardexec run --nofile 1024 --fsize 10M --no-core -- \
    grep -E '^Max (open files|file size|core file size)' /proc/self/limits
