"""hardexec.run and hardexec.Popen: subprocess's own API, plus a policy."""

import hardexec
from hardexec import Capability, Policy, SecurityConfig

policy = Policy(
    security=SecurityConfig(
        drop_all_caps=True, keep_caps=[Capability.NET_BIND_SERVICE], no_new_privs=True
    )
)

# mirrors subprocess.run: same arguments, same result, same exceptions
result = hardexec.run(
    ["grep", "^CapEff", "/proc/self/status"], policy=policy, capture_output=True, text=True
)
print(result.stdout, end="")  # CapEff:	0000000000000400

# mirrors subprocess.Popen
with hardexec.Popen(["sleep", "5"], policy=policy) as p:
    p.terminate()
print("sleep ended with", p.returncode)  # -15: SIGTERM

# a policy step that cannot be skipped raises StageError; a missing program, FileNotFoundError
try:
    hardexec.run(["no-such-program"], policy=policy)
except FileNotFoundError as err:
    print("not found:", err.filename)
