"""Resource ceilings, usage and the tree kill from Python.

With ``cgroups``, the program and everything it starts live in a cgroup v2 group of their own.
Where the kernel cannot give one (no cgroup v2, a controller missing), the program runs without
it and a StageWarning says so; ``CgroupLimits(fail_on_error=True)`` refuses instead.
"""

import subprocess

import hardexec
from hardexec import CgroupLimits, Policy, RlimitConfig, SecurityConfig

policy = Policy(
    security=SecurityConfig(drop_all_caps=True, no_new_privs=True),
    rlimits=RlimitConfig(max_open_files=1024, disable_core_dumps=True),
    # memory=256 << 20, pids=64, cpu=CpuMax(quota=50_000, period=100_000) where the kernel
    # offers those controllers; without limits, the group still gives usage and the tree kill
    cgroups=CgroupLimits(),
)

with hardexec.Popen(["sh", "-c", "ulimit -n"], policy=policy) as p:
    p.wait()
print("usage:", p.usage)  # Usage(memory_peak, cpu_user, cpu_system, ..., oom_killed)

# kill_tree(): the program and everything it started, setsid'd daemons too
script = "setsid sleep 30 & echo $!; exec sleep 30"
with hardexec.Popen(["sh", "-c", script], policy=policy, stdout=subprocess.PIPE) as p:
    print("daemon pid:", int(p.stdout.readline()))
    p.kill_tree()
print("program killed by signal", -p.wait())  # 9
