# What this host can enforce, and why not: each answer comes from the kernel (a Landlock
# ruleset, a seccomp filter, a cgroup and each kind of namespace are made for real).
hardexec check
# For scripts: exit status 1, and a line on stderr naming what is missing, unless each feature
# named is usable here (`hardexec check --help` lists them; --json gives one document).
if hardexec check --need landlock,seccomp-notify,cgroup-kill >/dev/null; then
    echo "ready: files, syscalls and whole trees can be confined and killed here"
fi
