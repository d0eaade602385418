"""hardexec.wrap: the policy for any other spawner (trio, anyio, your own).

Spawn ``w.argv`` with ``w.pass_fds`` inherited and ``w.env`` as the environment: it is empty,
because the program's environment reaches it through an fd, never through the privileged stage.
Here the spawner is plain subprocess; with trio it would be
``await trio.lowlevel.open_process(w.argv, pass_fds=w.pass_fds, env=w.env)``.
"""

import subprocess

import hardexec
from hardexec import Policy, SecurityConfig

policy = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))

with hardexec.wrap(["grep", "^CapPrm", "/proc/self/status"], policy) as w:
    proc = subprocess.Popen(
        w.argv, pass_fds=w.pass_fds, env=w.env, stdout=subprocess.PIPE, text=True
    )
    w.spawned()  # right after spawning: the parent's copy of the report pipe is closed
    w.check()  # waits until the program is exec'd; raises what Popen would
    out, _ = proc.communicate()
print(out, end="")  # CapPrm:	0000000000000000
