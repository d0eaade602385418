# A running process's five capability sets, NoNewPrivs and seccomp mode, decoded (--pid N for
# another process, --json for one document). Here the process is hardexec itself, started as
# the program of a run that keeps one capability, so it shows what such a program receives.
hardexec run --drop-all-caps --keep-cap NET_BIND_SERVICE --no-new-privs -- hardexec caps current
