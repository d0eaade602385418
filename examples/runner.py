"""hardexec.Runner: many hardened tasks at once, with capped output, timeouts that end the
whole tree, and a result for each."""

import asyncio

from hardexec import OutputLimits, Policy, Runner, SecurityConfig, TaskSpec

policy = Policy(security=SecurityConfig(drop_all_caps=True, no_new_privs=True))


async def main() -> None:
    runner = Runner(policy=policy, output=OutputLimits(max_bytes=1 << 20), concurrency=8)

    # a command (no shell), and a script (the body reaches python through a sealed memfd)
    result = await runner.run(TaskSpec.command(["grep", "^CapEff", "/proc/self/status"]))
    print(result.exit_code, result.stdout, end="")  # 0 CapEff:	0000000000000000
    result = await runner.run(TaskSpec.script("python", "print('hi from', __name__)"))
    print(result.stdout, end="")  # hi from __main__

    # a timeout ends the whole tree: SIGTERM, kill_after seconds of grace, SIGKILL
    spec = TaskSpec.command(["sh", "-c", "trap '' TERM; sleep 60"], timeout=0.5, kill_after=0.5)
    result = await runner.run(spec)
    print("timed out:", result.timed_out, "signal:", result.signal)  # timed out: True signal: 9

    # many at once, at most `concurrency` running, results in order
    results = await runner.map([TaskSpec.command(["echo", str(n)]) for n in range(100)])
    print(sum(int(r.stdout) for r in results))  # 4950

    # live lines
    async for event in runner.stream(TaskSpec.command(["printf", "a\\nb\\n"])):
        if event.kind == "line":
            print(event.stream, event.number, event.text)  # stdout 1 a / stdout 2 b

    print(runner.metrics.count("hardexec", "success"))  # 103


asyncio.run(main())
