"""hardexec.create_subprocess_exec: asyncio's own API, plus a policy."""

import asyncio
import subprocess

import hardexec
from hardexec import Capability, Policy, SecurityConfig

policy = Policy(
    security=SecurityConfig(
        drop_all_caps=True, keep_caps=[Capability.NET_BIND_SERVICE], no_new_privs=True
    )
)


async def main() -> None:
    proc = await hardexec.create_subprocess_exec(
        "grep", "^CapAmb", "/proc/self/status", policy=policy, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    print(out.decode(), end="")  # CapAmb:	0000000000000400
    print("exit status", proc.returncode)


asyncio.run(main())
